// Package reconcile checks the history the cluster serves against the raw
// archive: it recounts a range of minutes from the archive (package
// recount, with the aggregators' counting rules) and compares every row,
// one (minute, ad_id, country) of a partition, with the row of the history
// file served for it (the file of the applied revision, history.View).
// Rows compare by their clicks and, when the counts agree, by the user_id
// and ip hashes of their clicks, so a history that counts the right number
// of wrong clicks is caught too (recount.Compare).
//
// What cannot be compared is reported, never taken as a match: a history
// file that is missing or does not read back (its period's recounted rows
// are then checked against nothing), and a hole in the archive (the
// minutes its missing files may hold clicks of are not checked). A Report
// is OK only when every row matched and nothing was left unchecked.
//
// clickagg reconcile (package cli) runs Run, prints the Report, writes it
// as JSON, and records its totals in etcd (cluster.Client.PutReconcileRun)
// for the coordinator to export as metrics.
package reconcile
