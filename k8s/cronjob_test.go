package k8s_test

import (
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// cronJob checks a CronJob: its pods meet the invariants of every pod
// (security, resources, pinned images, env references); a clickagg
// container runs `clickagg reconcile` with its own flags, over the
// previous day or a range, once at a time, and is not restarted on the
// exit codes that report findings.
func (c *checker) cronJob(cj *batchv1.CronJob) {
	w := &workload{kind: "CronJob", name: cj.Name, namespace: cj.Namespace, template: &cj.Spec.JobTemplate.Spec.Template}
	spec := &w.template.Spec
	c.podSecurity(w, spec)
	if spec.RestartPolicy != corev1.RestartPolicyNever {
		c.addf("%s: restartPolicy is %q, want Never (the Job's podFailurePolicy decides on retries)", w, spec.RestartPolicy)
	}
	if cj.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent {
		c.addf("%s: concurrencyPolicy is %q, want Forbid", w, cj.Spec.ConcurrencyPolicy)
	}
	for _, ct := range spec.Containers {
		c.resources(w, &ct)
		c.image(w, ct.Image)
		c.envRefs(w, &ct)
		if imageRepo(ct.Image) != clickaggImage {
			continue
		}
		if len(ct.Args) == 0 || ct.Args[0] != "reconcile" {
			c.addf("%s: container %s: args %q do not run clickagg reconcile", w, ct.Name, ct.Args)
			continue
		}
		eff := c.clickaggFlags(w, &ct)
		if eff["previous-day"].value != "true" && (eff["from"].value == "" || eff["to"].value == "") {
			c.addf("%s: container %s: neither -previous-day nor -from and -to", w, ct.Name)
		}
		// Exit 2 and 3 report what the run found: running it again finds
		// the same.
		found := map[int32]bool{}
		if p := cj.Spec.JobTemplate.Spec.PodFailurePolicy; p != nil {
			for _, r := range p.Rules {
				if r.Action == batchv1.PodFailurePolicyActionFailJob && r.OnExitCodes != nil && r.OnExitCodes.Operator == batchv1.PodFailurePolicyOnExitCodesOpIn {
					for _, v := range r.OnExitCodes.Values {
						found[v] = true
					}
				}
			}
		}
		if !found[2] || !found[3] {
			c.addf("%s: podFailurePolicy does not fail the Job at once on exit codes 2 and 3 (findings, not failures)", w)
		}
	}
}
