package k8s_test

import (
	"net"
	"path"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// issuer is a cert-manager Issuer, with the fields the manifests use;
// strict decoding reports any other.
type issuer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SelfSigned *struct{} `json:"selfSigned,omitempty"`
		CA         *struct {
			SecretName string `json:"secretName"`
		} `json:"ca,omitempty"`
	} `json:"spec"`
}

// certificate is a cert-manager Certificate, with the fields the
// manifests use.
type certificate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SecretName  string   `json:"secretName"`
		CommonName  string   `json:"commonName"`
		DNSNames    []string `json:"dnsNames"`
		IPAddresses []string `json:"ipAddresses"`
		URIs        []string `json:"uris"`
		IsCA        bool     `json:"isCA"`
		Duration    string   `json:"duration"`
		RenewBefore string   `json:"renewBefore"`
		Usages      []string `json:"usages"`
		PrivateKey  *struct {
			Algorithm      string `json:"algorithm"`
			Size           int    `json:"size"`
			RotationPolicy string `json:"rotationPolicy"`
		} `json:"privateKey"`
		IssuerRef struct {
			Name  string `json:"name"`
			Kind  string `json:"kind"`
			Group string `json:"group"`
		} `json:"issuerRef"`
	} `json:"spec"`
}

// identity is the name authorization knows a client certificate by: its
// first URI SAN, else its Subject CN, else its first DNS SAN.
func (ct *certificate) identity() string {
	switch {
	case len(ct.Spec.URIs) > 0:
		return ct.Spec.URIs[0]
	case ct.Spec.CommonName != "":
		return ct.Spec.CommonName
	case len(ct.Spec.DNSNames) > 0:
		return ct.Spec.DNSNames[0]
	}
	return ""
}

func (m *manifest) certBySecret(secret string) *certificate {
	for _, ct := range m.certificates {
		if ct.Spec.SecretName == secret {
			return ct
		}
	}
	return nil
}

// certificates checks cert-manager's objects: every Certificate is issued
// by an Issuer of the build, every certificate but the CA's by a CA
// Issuer whose Secret a CA Certificate writes, and each is renewed
// before it expires.
func (c *checker) certificates() {
	issuers := map[string]*issuer{}
	for _, is := range c.m.issuers {
		issuers[is.Namespace+"/"+is.Name] = is
		if (is.Spec.SelfSigned == nil) == (is.Spec.CA == nil) {
			c.addf("Issuer %s: want exactly one of selfSigned and ca", is.Name)
		}
		if is.Spec.CA != nil {
			if ca := c.m.certBySecret(is.Spec.CA.SecretName); ca == nil || !ca.Spec.IsCA {
				c.addf("Issuer %s: its Secret %q is not written by a Certificate with isCA", is.Name, is.Spec.CA.SecretName)
			}
		}
	}
	for _, ct := range c.m.certificates {
		ref := ct.Spec.IssuerRef
		is := issuers[ct.Namespace+"/"+ref.Name]
		switch {
		case (ref.Kind != "" && ref.Kind != "Issuer") || (ref.Group != "" && ref.Group != "cert-manager.io"):
			c.addf("Certificate %s: issuerRef %s %s: want an Issuer of cert-manager.io in its namespace", ct.Name, ref.Kind, ref.Name)
		case is == nil:
			c.addf("Certificate %s: no Issuer %s in namespace %s", ct.Name, ref.Name, ct.Namespace)
		case !ct.Spec.IsCA && is.Spec.CA == nil:
			c.addf("Certificate %s: issued by %s, not by the CA: nobody could verify it", ct.Name, ref.Name)
		}
		if ct.Spec.SecretName == "" {
			c.addf("Certificate %s: no secretName", ct.Name)
		}
		d, err1 := time.ParseDuration(ct.Spec.Duration)
		r, err2 := time.ParseDuration(ct.Spec.RenewBefore)
		if err1 != nil || err2 != nil || r <= 0 || r >= d {
			c.addf("Certificate %s: duration %q, renewBefore %q: want both, renewal before expiry", ct.Name, ct.Spec.Duration, ct.Spec.RenewBefore)
		}
		if !ct.Spec.IsCA && !slices.Contains(ct.Spec.Usages, "client auth") && !slices.Contains(ct.Spec.Usages, "server auth") {
			c.addf("Certificate %s: usages %v: want server auth, client auth or both", ct.Name, ct.Spec.Usages)
		}
	}
}

// fileSource returns the volume and key that file, read by container ct
// of w, comes from. The mount must be read-only and not a subPath: a
// subPath mount never sees a renewed certificate or an edited policy.
func (c *checker) fileSource(w *workload, ct *corev1.Container, what, file string) (*corev1.Volume, string) {
	if file == "" {
		c.addf("%s: container %s: no %s", w, ct.Name, what)
		return nil, ""
	}
	var vm *corev1.VolumeMount
	for i := range ct.VolumeMounts {
		m := &ct.VolumeMounts[i]
		if path.Dir(file) == strings.TrimSuffix(m.MountPath, "/") {
			vm = m
		}
	}
	if vm == nil {
		c.addf("%s: container %s: %s=%s: no volume is mounted at %s", w, ct.Name, what, file, path.Dir(file))
		return nil, ""
	}
	if !vm.ReadOnly || vm.SubPath != "" {
		c.addf("%s: container %s: %s=%s: volume %s must be mounted readOnly, without subPath", w, ct.Name, what, file, vm.Name)
	}
	for i := range w.template.Spec.Volumes {
		v := &w.template.Spec.Volumes[i]
		if v.Name != vm.Name {
			continue
		}
		var items []corev1.KeyToPath
		switch {
		case v.Secret != nil:
			items = v.Secret.Items
		case v.ConfigMap != nil:
			items = v.ConfigMap.Items
		default:
			c.addf("%s: container %s: %s=%s: volume %s is neither a Secret nor a ConfigMap", w, ct.Name, what, file, v.Name)
			return nil, ""
		}
		key := path.Base(file)
		if len(items) > 0 {
			i := slices.IndexFunc(items, func(k corev1.KeyToPath) bool { return k.Path == key })
			if i < 0 {
				c.addf("%s: container %s: %s=%s: volume %s projects no %s", w, ct.Name, what, file, v.Name, key)
				return nil, ""
			}
			key = items[i].Key
		}
		return v, key
	}
	c.addf("%s: container %s: volumeMount %s names no volume", w, ct.Name, vm.Name)
	return nil, ""
}

// certFile checks that file comes from the Secret of a Certificate, as
// one of the files cert-manager writes, and returns that Certificate.
func (c *checker) certFile(w *workload, ct *corev1.Container, what, file string) *certificate {
	v, key := c.fileSource(w, ct, what, file)
	if v == nil {
		return nil
	}
	if v.Secret == nil {
		c.addf("%s: container %s: %s=%s: volume %s is not a Secret", w, ct.Name, what, file, v.Name)
		return nil
	}
	cert := c.m.certBySecret(v.Secret.SecretName)
	if cert == nil {
		c.addf("%s: container %s: %s=%s: Secret %s is not written by a Certificate", w, ct.Name, what, file, v.Secret.SecretName)
		return nil
	}
	if !slices.Contains([]string{"tls.crt", "tls.key", "ca.crt"}, key) {
		c.addf("%s: container %s: %s=%s: key %s is not one cert-manager writes", w, ct.Name, what, file, key)
	}
	return cert
}

// secretFile checks that file comes from a Secret (one the operator
// creates, so not checked further).
func (c *checker) secretFile(w *workload, ct *corev1.Container, what, file string) {
	if v, _ := c.fileSource(w, ct, what, file); v != nil && v.Secret == nil {
		c.addf("%s: container %s: %s=%s: volume %s is not a Secret", w, ct.Name, what, file, v.Name)
	}
}

// policy is a parsed -auth.policy-file.
type policy []policyLine

// policyLine is one line of a policy: kind:glob and its permissions.
type policyLine struct {
	kind, glob string
	perms      []string
}

var permissions = []string{"ingest", "query", "admin", "internal"}

// policyFile parses the policy that file, read by ct, comes from.
func (c *checker) policyFile(w *workload, ct *corev1.Container, file string) policy {
	v, key := c.fileSource(w, ct, "-auth.policy-file", file)
	if v == nil {
		return nil
	}
	if v.ConfigMap == nil || c.m.configMaps[v.ConfigMap.Name] == nil {
		c.addf("%s: -auth.policy-file=%s: volume %s is not a ConfigMap of the build", w, file, v.Name)
		return nil
	}
	text, ok := c.m.configMaps[v.ConfigMap.Name].Data[key]
	if !ok {
		c.addf("%s: -auth.policy-file=%s: ConfigMap %s has no key %s", w, file, v.ConfigMap.Name, key)
	}
	var p policy
	for _, line := range strings.Split(text, "\n") {
		line, _, _ = strings.Cut(line, "#")
		fs := strings.Fields(line)
		if len(fs) == 0 {
			continue
		}
		kind, glob, ok := strings.Cut(fs[0], ":")
		if len(fs) != 2 || !ok || (kind != "cert" && kind != "token") || glob == "" {
			c.addf("ConfigMap %s: policy line %q: want <cert|token>:<name-glob> <perm>[,<perm>...]", v.ConfigMap.Name, line)
			continue
		}
		if _, err := path.Match(glob, ""); err != nil {
			c.addf("ConfigMap %s: policy line %q: %v", v.ConfigMap.Name, line, err)
		}
		perms := strings.Split(fs[1], ",")
		for _, pm := range perms {
			if !slices.Contains(permissions, pm) {
				c.addf("ConfigMap %s: policy line %q: permission %q is not one of %v", v.ConfigMap.Name, line, pm, permissions)
			}
		}
		p = append(p, policyLine{kind, glob, perms})
	}
	return p
}

// grants reports whether the policy gives identity name of kind the
// permission perm.
func (p policy) grants(kind, name, perm string) bool {
	for _, l := range p {
		if ok, _ := path.Match(l.glob, name); ok && l.kind == kind && slices.Contains(l.perms, perm) {
			return true
		}
	}
	return false
}

// checkSecurity checks that a build turns TLS and authorization on
// everywhere (the production overlay and those built on it). Every
// clickagg server presents its role's certificate from a cert-manager
// Secret, verifies client certificates against the cluster's CA, and
// authorizes calls with a policy that gives its role's identity the
// calls members make on each other; members check each other's
// certificates by the name they all hold, since they dial pod IPs. Its
// probes are HTTPS (check's serving). etcd serves TLS and requires a
// client certificate, which every clickagg process presents; Redis
// serves TLS only, between its nodes too, and clickagg logs in as an ACL
// user. The reconcile CronJob has etcd's client certificate and the
// shippers check the routers' certificate and send a token.
func checkSecurity(m *manifest) []string {
	c := &checker{m: m}
	var cm map[string]string
	if m.configMaps["clickagg"] != nil {
		cm = m.configMaps["clickagg"].Data
	}
	redisUser := ""
	adminGranted := false
	for _, w := range m.workloads {
		for i := range w.template.Spec.Containers {
			ct := &w.template.Spec.Containers[i]
			if imageRepo(ct.Image) != clickaggImage {
				continue
			}
			eff := c.clickaggFlags(w, ct)
			if isShipper(w) {
				c.shipperSecurity(w, ct, eff)
				continue
			}
			role := w.template.Labels["app.kubernetes.io/component"]
			var cert *certificate
			for _, f := range []string{"tls.cert-file", "tls.key-file", "tls.ca-file"} {
				if got := c.certFile(w, ct, "-"+f, eff[f].value); got != nil {
					cert = got
				}
			}
			if cert != nil && cert.identity() != "clickagg-"+role {
				c.addf("%s: its certificate %s names %q, want clickagg-%s (the policy's cert:clickagg-%s)", w, cert.Name, cert.identity(), role, role)
			}
			if a := eff["tls.client-auth"].value; a != "verify-if-given" && a != "require" {
				c.addf("%s: -tls.client-auth is %q (%s): members must present certificates that are verified", w, a, eff["tls.client-auth"].source)
			}
			// Members dial each other at $(POD_IP) (-grpc.advertise-addr),
			// which no certificate lists.
			sn := eff["tls.server-name"].value
			switch {
			case sn == "":
				c.addf("%s: no -tls.server-name: members dial pod IPs, which no certificate names", w)
			case cert != nil && !slices.Contains(cert.Spec.DNSNames, sn):
				c.addf("%s: its certificate %s does not hold -tls.server-name %q: the other members would refuse it", w, cert.Name, sn)
			}
			p := c.policyFile(w, ct, eff["auth.policy-file"].value)
			if p != nil && !p.grants("cert", "clickagg-"+role, "internal") {
				c.addf("%s: -auth.policy-file does not grant cert:clickagg-%s internal", w, role)
			}
			for _, oc := range m.certificates {
				id := oc.identity()
				member := slices.Contains(roles, strings.TrimPrefix(id, "clickagg-"))
				adminGranted = adminGranted || (p != nil && !member && p.grants("cert", id, "admin"))
			}
			tokens := p != nil && slices.ContainsFunc(p, func(l policyLine) bool { return l.kind == "token" })
			switch f := eff["auth.tokens-file"].value; {
			case f != "":
				c.secretFile(w, ct, "-auth.tokens-file", f)
			case tokens:
				c.addf("%s: the policy grants tokens, but there is no -auth.tokens-file to know them by", w)
			}
			c.etcdClient(w, ct, eff)
			if slices.Contains([]string{"router", "aggregator", "queryd"}, role) {
				if eff["redis.tls"].value != "true" {
					c.addf("%s: -redis.tls is %q (%s): Redis is reached over TLS", w, eff["redis.tls"].value, eff["redis.tls"].source)
				}
				if redisUser = eff["redis.username"].value; redisUser == "" {
					c.addf("%s: no -redis.username: clickagg logs in to Redis as an ACL user of its own", w)
				}
				if f := eff["redis.tls-ca-file"].value; m.workload("redis") != nil {
					c.certFile(w, ct, "-redis.tls-ca-file", f)
				}
			}
		}
	}
	if !adminGranted {
		c.addf("the policy grants admin to no operator certificate (a Certificate whose identity is not a member's)")
	}
	for _, cj := range m.cronJobs {
		w := &workload{kind: "CronJob", name: cj.Name, namespace: cj.Namespace, template: &cj.Spec.JobTemplate.Spec.Template}
		for i := range w.template.Spec.Containers {
			if ct := &w.template.Spec.Containers[i]; imageRepo(ct.Image) == clickaggImage {
				c.etcdClient(w, ct, c.clickaggFlags(w, ct))
			}
		}
	}
	c.etcdServer(cm)
	c.redisServer(cm, redisUser)
	return c.problems
}

// etcdClient checks that a clickagg process reaches etcd over TLS with a
// client certificate of the cluster's CA.
func (c *checker) etcdClient(w *workload, ct *corev1.Container, eff map[string]setting) {
	for _, e := range strings.Split(eff["etcd.endpoints"].value, ",") {
		if !strings.HasPrefix(e, "https://") {
			c.addf("%s: -etcd.endpoints %q (%s): want https://", w, e, eff["etcd.endpoints"].source)
		}
	}
	for _, f := range []string{"etcd.cert-file", "etcd.key-file", "etcd.ca-file"} {
		if cert := c.certFile(w, ct, "-"+f, eff[f].value); cert != nil && f == "etcd.cert-file" && !slices.Contains(cert.Spec.Usages, "client auth") {
			c.addf("%s: -etcd.cert-file: Certificate %s has no usage client auth", w, cert.Name)
		}
	}
}

// etcdServer checks that etcd serves its clients and peers over TLS
// only, requires certificates of both, and holds a certificate naming
// every endpoint clickagg dials.
func (c *checker) etcdServer(cm map[string]string) {
	w := c.m.workload("etcd")
	if w == nil {
		return
	}
	for i := range w.template.Spec.Containers {
		ct := &w.template.Spec.Containers[i]
		args := map[string]string{}
		for _, a := range ct.Args {
			k, v, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
			args[k] = v
		}
		for _, k := range []string{"listen-client-urls", "advertise-client-urls", "listen-peer-urls", "initial-advertise-peer-urls"} {
			if !strings.HasPrefix(args[k], "https://") {
				c.addf("%s: --%s=%s: want https://", w, k, args[k])
			}
		}
		for _, k := range []string{"client-cert-auth", "peer-client-cert-auth"} {
			if args[k] != "true" {
				c.addf("%s: --%s is %q, want true: etcd must require certificates", w, k, args[k])
			}
		}
		var cert *certificate
		for _, k := range []string{"cert-file", "key-file", "trusted-ca-file", "peer-cert-file", "peer-key-file", "peer-trusted-ca-file"} {
			if got := c.certFile(w, ct, "--"+k, args[k]); got != nil && k == "cert-file" {
				cert = got
			}
		}
		for _, e := range ct.Env {
			if e.Name != "ETCD_INITIAL_CLUSTER" {
				continue
			}
			for _, mb := range strings.Split(e.Value, ",") {
				if _, u, _ := strings.Cut(mb, "="); !strings.HasPrefix(u, "https://") {
					c.addf("%s: ETCD_INITIAL_CLUSTER: %q: want https://", w, mb)
				}
			}
		}
		if cert == nil {
			continue
		}
		for _, e := range strings.Split(cm[envName("etcd.endpoints")], ",") {
			if host := hostOf(e); !slices.Contains(cert.Spec.DNSNames, host) {
				c.addf("Certificate %s does not name %s, an etcd endpoint (%s)", cert.Name, host, envName("etcd.endpoints"))
			}
		}
	}
}

// hostOf is the host of a URL, a gRPC target dns:///host:port, or host:port.
func hostOf(s string) string {
	if scheme, rest, ok := strings.Cut(s, "://"); ok {
		s = rest
		if scheme == "dns" {
			// A gRPC target dns://[resolver]/host:port.
			_, s, _ = strings.Cut(rest, "/")
		}
	}
	if h, _, err := net.SplitHostPort(s); err == nil {
		return h
	}
	return s
}

// redisServer checks the in-cluster Redis, when there is one: TLS only,
// on its client port, replication and cluster bus, with a certificate
// naming every node clickagg dials, and the ACL user clickagg logs in as.
func (c *checker) redisServer(cm map[string]string, user string) {
	w := c.m.workload("redis")
	if w == nil || c.m.configMaps["redis"] == nil {
		return
	}
	conf := map[string]string{}
	for _, line := range strings.Split(c.m.configMaps["redis"].Data["redis.conf"], "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), " ")
		conf[k] = strings.TrimSpace(v)
	}
	if conf["port"] != "0" || conf["tls-port"] == "" {
		c.addf("ConfigMap redis: port %q, tls-port %q: want port 0 and a tls-port (TLS only)", conf["port"], conf["tls-port"])
	}
	for _, k := range []string{"tls-replication", "tls-cluster"} {
		if conf["cluster-enabled"] == "yes" && conf[k] != "yes" {
			c.addf("ConfigMap redis: %s is %q, want yes: the nodes talk to each other in plaintext", k, conf[k])
		}
	}
	for i := range w.template.Spec.Containers {
		ct := &w.template.Spec.Containers[i]
		var cert *certificate
		for _, k := range []string{"tls-cert-file", "tls-key-file", "tls-ca-cert-file"} {
			if got := c.certFile(w, ct, k, conf[k]); got != nil {
				cert = got
			}
		}
		if user != "" && !strings.Contains(strings.Join(ct.Command, " "), "user "+user+" on ") {
			c.addf("%s: container %s: no ACL user %s (\"user %s on ...\") is defined for -redis.username", w, ct.Name, user, user)
		}
		if cert == nil {
			continue
		}
		seeds := cm[envName("redis.cluster-addrs")]
		if seeds == "" {
			seeds = cm[envName("redis.addr")]
		}
		for _, a := range strings.Split(seeds, ",") {
			if host := hostOf(a); !slices.Contains(cert.Spec.DNSNames, host) {
				c.addf("Certificate %s does not name %s, a Redis node clickagg dials", cert.Name, host)
			}
		}
	}
}

// shipperSecurity checks that a shipper verifies the routers against the
// cluster's CA, by a name their certificate holds, and identifies itself
// with a token or a certificate.
func (c *checker) shipperSecurity(w *workload, ct *corev1.Container, eff map[string]setting) {
	c.secretFile(w, ct, "-tls.ca-file", eff["tls.ca-file"].value)
	switch {
	case eff["auth.token-file"].value != "":
		c.secretFile(w, ct, "-auth.token-file", eff["auth.token-file"].value)
	case eff["tls.cert-file"].value != "":
		c.secretFile(w, ct, "-tls.cert-file", eff["tls.cert-file"].value)
	default:
		c.addf("%s: neither -auth.token-file nor -tls.cert-file: the routers refuse a caller without an identity", w)
	}
	var router *certificate
	for _, ce := range c.m.certificates {
		if ce.identity() == "clickagg-router" {
			router = ce
		}
	}
	for _, a := range strings.Split(eff["ship.routers"].value, ",") {
		if router != nil && !slices.Contains(router.Spec.DNSNames, hostOf(a)) {
			c.addf("%s: -ship.routers %s: the routers' Certificate %s does not name %s", w, a, router.Name, hostOf(a))
		}
	}
}
