// Package topn ranks ads by click count and merges ranked lists.
//
// The ranking order is the one every answer of the cluster uses: count
// descending, then ad_id ascending, so that equal counts always come back in
// the same order no matter which aggregator or partition produced them.
//
// Merge is how queryd turns the per-aggregator answers of a top-N query into
// one: every ad that is not split lives in exactly one partition, so each
// aggregator's list is the exact top N of a set of ads that no other list
// contains, and the top N of the union is the top N of the concatenation.
// A split ad appears once per sub-key; Merge adds its parts up.
package topn
