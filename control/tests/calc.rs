//! The incremental calculation against a compilation from scratch: after every change of a
//! long random sequence (pod labels, addresses, pods coming and going, namespace labels,
//! policies, network sets, clashing addresses), this node's tables from the calculator
//! (selector cache, label index, only local policies) must equal those compiled from the
//! same objects with an empty cache.

use weir_control::calc::{drive, Calculator, Change, DriveState, Update};
use weir_control::policy::compile::{compile_local, Cache, Compiled};
use weir_control::policy::load::{load_documents, Cluster, Object};
use weir_control::policy::model::{Kind, ObjectRef};
use weir_dataplane::policy::program::{NetSetId, PortMatch};
use weir_dataplane::policy::{Program, Rule};

/// xorshift64*: deterministic, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, of: &[&'a str]) -> &'a str {
        of[self.below(of.len())]
    }
}

const NAMESPACES: usize = 6;
const PODS: usize = 40;
const APPS: &[&str] = &["web", "db", "cache"];
const TEAMS: &[&str] = &["a", "b", "c"];

fn one(yaml: &str) -> Object {
    load_documents(yaml, "generated")
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
        .remove(0)
}

fn namespace(rng: &mut Rng, i: usize) -> Object {
    one(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns{i}\n  labels:\n    team: {}\n",
        rng.pick(TEAMS)
    ))
}

fn pod(rng: &mut Rng, i: usize, ip: usize) -> Object {
    let ns = i % NAMESPACES;
    let local = rng.below(3) == 0;
    let node = if local { "node-a" } else { "node-b" };
    let ports = if rng.below(2) == 0 {
        "    ports:\n    - name: http\n      containerPort: 8080\n"
    } else {
        ""
    };
    one(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pod{i}\n  namespace: ns{ns}\n  labels:\n    \
         app: {}\n    tier: {}\n  annotations:\n    weir.dev/interface: veth{i}\nspec:\n  nodeName: \
         {node}\n  containers:\n  - name: c\n{ports}status:\n  podIPs:\n  - ip: 198.18.{}.{}\n",
        rng.pick(APPS),
        rng.pick(&["front", "back"]),
        ip / 250,
        ip % 250 + 1
    ))
}

fn policy(rng: &mut Rng, i: usize) -> Object {
    let ns = rng.below(NAMESPACES);
    match rng.below(5) {
        // A peer by service account: resolved outside the selector cache.
        4 => one(&format!(
            "apiVersion: weir.dev/v1\nkind: NetworkPolicy\nmetadata:\n  name: w{i}\n  namespace: \
             ns{ns}\nspec:\n  tier: security\n  order: {}\n  selector: app == '{}'\n  ingress:\n  \
             - action: Deny\n    source:\n      selector: tier == 'front'\n      \
             namespaceSelector: all()\n      serviceAccounts:\n        selector: trust == 'low'\n",
            rng.below(100),
            rng.pick(APPS)
        )),
        0 => one(&format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: k{i}\n  \
             namespace: ns{ns}\nspec:\n  podSelector:\n    matchLabels:\n      app: {}\n  \
             ingress:\n  - from:\n    - podSelector:\n        matchLabels:\n          app: {}\n    \
             - namespaceSelector:\n        matchLabels:\n          team: {}\n      podSelector:\n        \
             matchLabels:\n          tier: back\n    ports:\n    - port: http\n",
            rng.pick(APPS),
            rng.pick(APPS),
            rng.pick(TEAMS)
        )),
        1 => one(&format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: k{i}\n  \
             namespace: ns{ns}\nspec:\n  podSelector: {{}}\n  policyTypes: [Egress]\n  egress:\n  \
             - to:\n    - namespaceSelector:\n        matchExpressions:\n        - key: team\n          \
             operator: NotIn\n          values: [{}]\n",
            rng.pick(TEAMS)
        )),
        2 => one(&format!(
            "apiVersion: weir.dev/v1\nkind: NetworkPolicy\nmetadata:\n  name: w{i}\n  namespace: \
             ns{ns}\nspec:\n  tier: security\n  order: {}\n  selector: app == '{}'\n  ingress:\n  \
             - action: Allow\n    source:\n      selector: tier == 'front'\n      \
             namespaceSelector: team == '{}'\n  - action: Deny\n    source:\n      selector: \
             role == 'bad'\n  - action: Allow\n    source:\n      selector: role == 'good'\n      \
             namespaceSelector: team != '{}'\n",
            rng.below(100),
            rng.pick(APPS),
            rng.pick(TEAMS),
            rng.pick(TEAMS)
        )),
        _ => one(&format!(
            "apiVersion: weir.dev/v1\nkind: GlobalNetworkPolicy\nmetadata:\n  name: \
             security.g{i}\nspec:\n  tier: security\n  order: {}\n  selector: app in {{'{}'}}\n  \
             types: [Egress]\n  egress:\n  - action: Deny\n    destination:\n      selector: \
             role == 'bad'\n      namespaceSelector: global()\n  - action: Allow\n    \
             destination:\n      selector: app == '{}'\n  - action: Pass\n",
            rng.below(100),
            rng.pick(APPS),
            rng.pick(APPS)
        )),
    }
}

fn network_set(rng: &mut Rng, i: usize) -> Object {
    let role = rng.pick(&["bad", "good"]);
    if rng.below(2) == 0 {
        one(&format!(
            "apiVersion: weir.dev/v1\nkind: GlobalNetworkSet\nmetadata:\n  name: g{i}\n  labels:\n    \
             role: {role}\nspec:\n  nets: [198.19.{i}.0/24]\n"
        ))
    } else {
        one(&format!(
            "apiVersion: weir.dev/v1\nkind: NetworkSet\nmetadata:\n  name: s{i}\n  namespace: \
             ns{}\n  labels:\n    role: {role}\nspec:\n  nets: [198.19.{}.0/24]\n",
            rng.below(NAMESPACES),
            100 + i
        ))
    }
}

/// Everything that decides a packet's verdict, in a comparable form: each endpoint's rules
/// with what their ids stand for (rule ids and set ids stay with what they name from one
/// compilation to the next, so an incremental compilation numbers them differently from
/// one from scratch).
fn fingerprint(c: &Compiled) -> String {
    let mut out = format!("{:?}\n", c.endpoints);
    for e in &c.tables.endpoints {
        for program in [&e.ingress, &e.egress] {
            let Some(program) = program else {
                out += "open\n";
                continue;
            };
            for tier in program.tiers() {
                for rule in &tier.rules {
                    out += &rule_text(c, rule);
                    out += "\n";
                }
                out += &format!(
                    "end {:?} {:?}\n",
                    tier.end, c.tables.rules[tier.end_id as usize]
                );
            }
        }
    }
    out
}

/// One rule, its ids replaced by what they name.
fn rule_text(c: &Compiled, rule: &Rule) -> String {
    let sets = &c.tables.sets;
    let net = |id: Option<NetSetId>| id.map(|i| format!("{:?}", sets.nets[i as usize]));
    let named = |p: &PortMatch| {
        p.named.map(|i| {
            let mut v: Vec<_> = sets.named_ports[i as usize].iter().collect();
            v.sort();
            format!("{v:?}")
        })
    };
    let mut m = rule.matches.clone();
    let contents = format!(
        "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
        net(m.src_nets),
        net(m.not_src_nets),
        net(m.dst_nets),
        net(m.not_dst_nets),
        named(&m.src_ports),
        named(&m.not_src_ports),
        named(&m.dst_ports),
        named(&m.not_dst_ports)
    );
    for id in [
        &mut m.src_nets,
        &mut m.not_src_nets,
        &mut m.dst_nets,
        &mut m.not_dst_nets,
    ] {
        *id = id.map(|_| 0);
    }
    for p in [
        &mut m.src_ports,
        &mut m.not_src_ports,
        &mut m.dst_ports,
        &mut m.not_dst_ports,
    ] {
        p.named = p.named.map(|_| 0);
    }
    format!(
        "{:?} {:?} {m:?} {contents}",
        c.tables.rules[rule.id as usize], rule.action
    )
}

/// Every program (decision structure included) must be the one its rules and sets make:
/// a program kept from an earlier compilation must not carry stale set contents.
fn assert_fresh_programs(c: &Compiled, step: usize) {
    for (i, e) in c.tables.endpoints.iter().enumerate() {
        for program in [&e.ingress, &e.egress].into_iter().flatten() {
            let fresh = Program::new(program.tiers().to_vec(), &c.tables.sets);
            assert!(
                fresh == **program,
                "step {step}: endpoint {i}'s program differs from one built from its rules"
            );
        }
    }
}

fn from_scratch(calc: &Calculator) -> Compiled {
    let cluster = Cluster::from_objects(calc.objects().values().cloned().collect())
        .unwrap_or_else(|e| panic!("the calculator's objects do not make a cluster: {e:?}"));
    compile_local(&cluster, calc.local_pods(), &mut Cache::default())
}

#[test]
fn incremental_tables_equal_tables_compiled_from_scratch_after_every_change() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut calc = Calculator::new("node-a");
    let tier = one(
        "apiVersion: weir.dev/v1\nkind: Tier\nmetadata:\n  name: security\nspec:\n  order: 10\n  \
         defaultAction: Pass\n",
    );
    assert!(calc.apply(Change::Upsert(tier)).is_empty());
    for i in 0..NAMESPACES {
        let o = namespace(&mut rng, i);
        assert!(calc.apply(Change::Upsert(o)).is_empty());
    }
    for i in 0..PODS {
        let o = pod(&mut rng, i, i);
        assert!(calc.apply(Change::Upsert(o)).is_empty());
    }
    for i in 0..12 {
        let o = policy(&mut rng, i);
        assert!(calc.apply(Change::Upsert(o)).is_empty());
    }
    for i in 0..4 {
        let o = network_set(&mut rng, i);
        assert!(calc.apply(Change::Upsert(o)).is_empty());
    }
    let first = calc.compile();
    assert!(!first.endpoints.is_empty(), "some pods are local");
    assert_eq!(fingerprint(&first), fingerprint(&from_scratch(&calc)));

    let mut next_ip = PODS;
    let mut clashes = 0;
    for step in 0..400 {
        let change = match rng.below(10) {
            // A namespace's default service account is labelled again.
            9 => Change::Upsert(one(&format!(
                "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: default\n  \
                 namespace: ns{}\n  labels:\n    trust: {}\n",
                rng.below(NAMESPACES),
                rng.pick(&["low", "high"])
            ))),
            // The tier's default action flips: every program with a policy of it changes,
            // with no policy's rules changed.
            8 => Change::Upsert(one(&format!(
                "apiVersion: weir.dev/v1\nkind: Tier\nmetadata:\n  name: security\nspec:\n  \
                 order: 10\n  defaultAction: {}\n",
                rng.pick(&["Pass", "Deny"])
            ))),
            // A pod's labels (and maybe its node) change; same address.
            0 | 1 => {
                let i = rng.below(PODS);
                let objects = calc.objects();
                let current = objects
                    .keys()
                    .find(|o| o.kind == Kind::Pod && o.name == format!("pod{i}"));
                let ip = match current {
                    Some(_) => i,
                    None => {
                        next_ip += 1;
                        next_ip
                    }
                };
                Change::Upsert(pod(&mut rng, i, ip))
            }
            // A pod is re-addressed, or takes another pod's address (refused).
            2 => {
                let i = rng.below(PODS);
                if rng.below(4) == 0 {
                    Change::Upsert(pod(&mut rng, i, (i + 1) % PODS))
                } else {
                    next_ip += 1;
                    Change::Upsert(pod(&mut rng, i, next_ip))
                }
            }
            3 => {
                let i = rng.below(PODS);
                Change::Delete(ObjectRef::namespaced(
                    Kind::Pod,
                    &format!("ns{}", i % NAMESPACES),
                    &format!("pod{i}"),
                ))
            }
            4 => {
                let i = rng.below(NAMESPACES);
                Change::Upsert(namespace(&mut rng, i))
            }
            5 => {
                let i = rng.below(20);
                Change::Upsert(policy(&mut rng, i))
            }
            6 => {
                let i = rng.below(6);
                Change::Upsert(network_set(&mut rng, i))
            }
            _ => {
                let i = rng.below(6);
                let kind = if rng.below(2) == 0 {
                    Kind::GlobalNetworkSet
                } else {
                    Kind::K8sNetworkPolicy
                };
                let objects = calc.objects();
                match objects
                    .keys()
                    .find(|o| o.kind == kind && o.name.ends_with(&i.to_string()))
                {
                    Some(o) => Change::Delete(o.clone()),
                    None => Change::Upsert(network_set(&mut rng, i)),
                }
            }
        };
        let refused = calc.apply(change);
        for r in &refused {
            assert_eq!(r.field, "status.podIPs", "{r}");
            assert!(r.to_string().contains("is also the address of Pod"), "{r}");
            clashes += 1;
        }
        let incremental = calc.compile();
        let scratch = from_scratch(&calc);
        assert_eq!(
            fingerprint(&incremental),
            fingerprint(&scratch),
            "step {step}: the incremental tables differ from a full compilation"
        );
        assert_fresh_programs(&incremental, step);
    }
    assert!(clashes > 0, "the sequence tried some address clashes");
    assert!(
        calc.compilations_skipped() > 0,
        "some changes left this node's tables as they were, and were not compiled"
    );
    assert!(
        calc.cache().rules_kept > calc.cache().rules_compiled,
        "most policies' rules were taken from the compilation before ({} kept, {} compiled)",
        calc.cache().rules_kept,
        calc.cache().rules_compiled
    );
    assert!(
        calc.cache().plans_kept > 0 && calc.cache().plans_made > 0,
        "some compilations kept the last one's plan, others made one ({} kept, {} made)",
        calc.cache().plans_kept,
        calc.cache().plans_made
    );
    assert!(
        calc.cache().hits > calc.cache().misses,
        "the cache answered most resolutions ({} hits, {} misses)",
        calc.cache().hits,
        calc.cache().misses
    );
}

#[test]
fn a_pod_elsewhere_reaches_the_tables_through_a_service_account_peer() {
    // A peer by service account is resolved outside the selector cache: a pod on another
    // node that starts to match it must still make this node compile again.
    let mut calc = Calculator::new("node-a");
    let objects = [
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns0\n",
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: default\n  namespace: ns0\n  \
         labels:\n    trust: low\n",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: here\n  namespace: ns0\n  labels:\n    \
         app: db\n  annotations:\n    weir.dev/interface: veth0\nspec:\n  nodeName: node-a\n  \
         containers:\n  - name: c\nstatus:\n  podIPs:\n  - ip: 198.18.0.1\n",
        "apiVersion: weir.dev/v1\nkind: NetworkPolicy\nmetadata:\n  name: by-account\n  \
         namespace: ns0\nspec:\n  selector: app == 'db'\n  ingress:\n  - action: Deny\n    \
         source:\n      selector: tier == 'front'\n      serviceAccounts:\n        selector: \
         trust == 'low'\n",
    ];
    for o in objects {
        assert!(calc.apply(Change::Upsert(one(o))).is_empty());
    }
    let elsewhere = |tier: &str| {
        one(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: there\n  namespace: ns0\n  labels:\n    \
             tier: {tier}\nspec:\n  nodeName: node-b\n  containers:\n  - name: c\nstatus:\n  \
             podIPs:\n  - ip: 198.18.0.2\n"
        ))
    };
    assert!(calc.apply(Change::Upsert(elsewhere("back"))).is_empty());
    let before = calc.compile();
    assert_eq!(fingerprint(&before), fingerprint(&from_scratch(&calc)));
    // A change nothing here reads: the tables stay, not compiled again.
    let skipped = calc.compilations_skipped();
    let unrelated = "apiVersion: weir.dev/v1\nkind: GlobalNetworkSet\nmetadata:\n  name: g0\n  \
                     labels:\n    role: other\nspec:\n  nets: [198.19.0.0/24]\n";
    assert!(calc.apply(Change::Upsert(one(unrelated))).is_empty());
    assert_eq!(fingerprint(&calc.compile()), fingerprint(&before));
    assert_eq!(calc.compilations_skipped(), skipped + 1);
    // The pod elsewhere now matches the peer.
    assert!(calc.apply(Change::Upsert(elsewhere("front"))).is_empty());
    let after = calc.compile();
    assert_eq!(fingerprint(&after), fingerprint(&from_scratch(&calc)));
    assert_ne!(
        fingerprint(&after),
        fingerprint(&before),
        "the peer's addresses changed"
    );
}

#[test]
fn a_relist_swaps_to_the_new_state_in_one_step() {
    let mut rng = Rng(7);
    let mut calc = Calculator::new("node-a");
    let mut objects: Vec<Object> = (0..NAMESPACES).map(|i| namespace(&mut rng, i)).collect();
    objects.extend((0..PODS).map(|i| pod(&mut rng, i, i)));
    let kinds = vec![Kind::Namespace, Kind::Pod];
    assert!(calc
        .apply(Change::Resync {
            kinds: kinds.clone(),
            objects: objects.clone()
        })
        .is_empty());
    assert_eq!(calc.cluster().pods.len(), PODS);
    // The relist lost half the pods and relabelled a namespace.
    let mut second: Vec<Object> = (0..NAMESPACES).map(|i| namespace(&mut rng, i)).collect();
    second.extend((0..PODS / 2).map(|i| pod(&mut rng, i, i)));
    assert!(calc
        .apply(Change::Resync {
            kinds,
            objects: second.clone()
        })
        .is_empty());
    assert_eq!(calc.cluster().pods.len(), PODS / 2);
    let mut expected: Vec<_> = second.iter().map(|o| o.resource.clone()).collect();
    let mut held: Vec<_> = calc
        .objects()
        .values()
        .map(|o| o.resource.clone())
        .collect();
    expected.sort_by_key(|r| r.object_ref());
    held.sort_by_key(|r| r.object_ref());
    assert_eq!(held, expected);
    assert_eq!(
        fingerprint(&calc.compile()),
        fingerprint(&from_scratch(&calc))
    );
}

#[test]
fn a_tier_in_use_is_not_deleted_and_a_policy_needs_its_tier() {
    let mut calc = Calculator::new("node-a");
    let policy = one(
        "apiVersion: weir.dev/v1\nkind: GlobalNetworkPolicy\nmetadata:\n  name: sec.x\nspec:\n  \
         tier: sec\n  selector: all()\n  ingress:\n  - action: Allow\n",
    );
    let refused = calc.apply(Change::Upsert(policy.clone()));
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].field, "spec.tier");
    assert!(calc.cluster().global_policies.is_empty());
    let tier =
        one("apiVersion: weir.dev/v1\nkind: Tier\nmetadata:\n  name: sec\nspec:\n  order: 1\n");
    assert!(calc.apply(Change::Upsert(tier)).is_empty());
    assert!(calc.apply(Change::Upsert(policy)).is_empty());
    let refused = calc.apply(Change::Delete(ObjectRef::cluster(Kind::Tier, "sec")));
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].message.contains("GlobalNetworkPolicy sec.x"));
    assert!(calc.cluster().tiers.contains_key("sec"));
    calc.apply(Change::Delete(ObjectRef::cluster(
        Kind::GlobalNetworkPolicy,
        "sec.x",
    )));
    assert!(calc
        .apply(Change::Delete(ObjectRef::cluster(Kind::Tier, "sec")))
        .is_empty());
    assert!(!calc.cluster().tiers.contains_key("sec"));
}

#[test]
fn services_and_endpoint_slices_are_kept_replaced_relisted_and_deleted() {
    let mut calc = Calculator::new("node-a");
    let service = |ip: &str| {
        one(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\nspec:\n  \
             clusterIP: {ip}\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: \
             8080}}]\n"
        ))
    };
    let slice = |name: &str| {
        one(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  \
             namespace: shop\n  labels: {{kubernetes.io/service-name: web}}\naddressType: \
             IPv4\nendpoints: [{{addresses: [198.18.1.10]}}]\nports: [{{port: 8080}}]\n"
        ))
    };
    let compiled = fingerprint(&calc.compile());
    assert!(calc
        .apply(Change::Upsert(service("198.19.0.10")))
        .is_empty());
    assert!(calc.apply(Change::Upsert(slice("web-a"))).is_empty());
    let c = calc.cluster();
    assert_eq!((c.services.len(), c.endpoint_slices.len()), (1, 1));
    assert!(c.namespaces.contains_key("shop"), "their namespace exists");
    assert_eq!(
        fingerprint(&calc.compile()),
        compiled,
        "policy does not read them"
    );
    assert!(calc
        .apply(Change::Upsert(service("198.19.0.11")))
        .is_empty());
    let web = weir_control::policy::model::NamespacedName::new("shop", "web");
    assert_eq!(
        calc.cluster().services[&web].cluster_ips,
        ["198.19.0.11".parse::<std::net::IpAddr>().unwrap()]
    );
    // A relist of slices that lost web-a and gained web-b.
    assert!(calc
        .apply(Change::Resync {
            kinds: vec![Kind::EndpointSlice],
            objects: vec![slice("web-b")],
        })
        .is_empty());
    let names: Vec<&str> = calc
        .cluster()
        .endpoint_slices
        .keys()
        .map(|k| k.name.as_str())
        .collect();
    assert_eq!(names, ["web-b"]);
    assert_eq!(calc.objects().len(), 2);
    calc.apply(Change::Delete(ObjectRef::namespaced(
        Kind::Service,
        "shop",
        "web",
    )));
    calc.apply(Change::Delete(ObjectRef::namespaced(
        Kind::EndpointSlice,
        "shop",
        "web-b",
    )));
    assert!(calc.cluster().services.is_empty() && calc.cluster().endpoint_slices.is_empty());
    assert!(calc.objects().is_empty());
}

#[test]
fn a_cni_attachment_overlays_the_datastore_pod_and_detaching_restores_it() {
    use weir_control::calc::Attachment;
    use weir_control::policy::model::NamespacedName;
    let mut calc = Calculator::new("node-a");
    let key = NamespacedName::new("shop", "web-1");
    let attachment = Attachment {
        pod: key.clone(),
        container_id: "c1".into(),
        interface: "w0123456789abcd".into(),
        mac: "02:00:00:00:00:07".into(),
        host_mac: Some("02:00:00:00:00:08".into()),
        mtu: Some(1450),
        ips: vec!["198.18.4.7".parse().unwrap()],
    };
    // Attached before the datastore knows the pod: a bare local endpoint.
    assert!(calc.apply(Change::Attach(attachment.clone())).is_empty());
    let compiled = calc.compile();
    assert_eq!(compiled.endpoints.len(), 1);
    assert!(calc.cluster().pods[&key].labels.is_empty());
    // The datastore's version arrives (labels, no address yet): labels taken, the
    // attachment's address and interface kept.
    let listed = one(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-1\n  namespace: shop\n  labels:\n    \
         app: web\nspec:\n  nodeName: node-a\n  containers:\n  - name: c\n",
    );
    assert!(calc.apply(Change::Upsert(listed)).is_empty());
    let pod = &calc.cluster().pods[&key];
    assert_eq!(pod.labels["app"], "web");
    assert_eq!(pod.ips, attachment.ips);
    assert_eq!(calc.compile().endpoints.len(), 1);
    // Another pod claiming the attachment's address is refused.
    let thief = one(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: thief\n  namespace: shop\nstatus:\n  \
         podIPs:\n  - ip: 198.18.4.7\n",
    );
    assert_eq!(calc.apply(Change::Upsert(thief)).len(), 1);
    // Detached: back to the datastore's version, which has no address: no endpoint.
    assert!(calc.apply(Change::Detach(key.clone())).is_empty());
    assert!(calc.cluster().pods[&key].ips.is_empty());
    assert_eq!(calc.compile().endpoints.len(), 0);
    assert_eq!(calc.attachments().count(), 0);
    // Attach again, then the datastore deletes the pod: it stays (bare) until detached.
    assert!(calc.apply(Change::Attach(attachment)).is_empty());
    calc.apply(Change::Delete(ObjectRef::namespaced(
        Kind::Pod,
        "shop",
        "web-1",
    )));
    assert_eq!(calc.compile().endpoints.len(), 1);
    calc.apply(Change::Detach(key.clone()));
    assert!(!calc.cluster().pods.contains_key(&key));
    assert_eq!(
        fingerprint(&calc.compile()),
        fingerprint(&from_scratch(&calc))
    );
}

/// The route set the calculation gives node `me`: every prefix routed to a remote node,
/// with the node's name, and each WireGuard peer's allowed IPs; built into a snapshot and
/// read back from it, as the workers see it.
mod routes {
    use std::net::{IpAddr, SocketAddr};

    use weir_control::calc::{Calculator, Change};
    use weir_control::policy::model::{Kind, ObjectRef};
    use weir_control::wireguard::{remote_nodes, WireGuardConfig};
    use weir_crypto::EncryptionMode;
    use weir_dataplane::snapshot::{NextHop, Snapshot, Tunnel};
    use weir_dataplane::SnapshotBuilder;

    use super::one;

    fn node(name: &str, underlay: &str, key_byte: u8, pod_cidr: Option<&str>) -> Change {
        let key = weir_crypto::NodeKey::from_bytes([key_byte; 32]).public_base64();
        let spec = pod_cidr.map_or(String::new(), |c| {
            format!("spec: {{podCIDRs: [\"{c}\"]}}\n")
        });
        Change::Upsert(one(&format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  annotations:\n    \
             weir.dev/wireguard-public-key: \"{key}\"\n    weir.dev/underlay-mac: \
             \"02:00:00:00:00:0{key_byte}\"\n{spec}status:\n  addresses: [{{type: InternalIP, \
             address: \"{underlay}\"}}]\n"
        )))
    }

    fn block(cidr: &str, node: &str) -> Change {
        Change::Upsert(one(&format!(
            "apiVersion: weir.dev/v1\nkind: IPAMBlock\nmetadata:\n  name: {}\nspec:\n  cidr: \
             \"{cidr}\"\n  pool: shared\n  node: {node}\n  leases: {{}}\n",
            cidr.replace(['.', '/', ':'], "-")
        )))
    }

    fn block_ref(cidr: &str) -> ObjectRef {
        ObjectRef::cluster(Kind::IpamBlock, &cidr.replace(['.', '/', ':'], "-"))
    }

    struct Routes {
        snapshot: Snapshot,
        warnings: Vec<String>,
    }

    impl Routes {
        fn of(calc: &Calculator, me: &str) -> Routes {
            let config = WireGuardConfig {
                mode: "required".into(),
                port: 51820,
                key_file: "/nonexistent".into(),
                address: None,
            };
            let mut b = SnapshotBuilder::new();
            b.wireguard(SocketAddr::new("198.18.250.9".parse().unwrap(), 51820));
            let mut warnings = Vec::new();
            let peers = remote_nodes(
                me,
                Some((&config, EncryptionMode::Required)),
                calc.cluster(),
                &mut b,
                &mut warnings,
            );
            // The set the agent checks before it publishes: no overlap between peers.
            weir_crypto::Peers::new(weir_crypto::NodeKey::from_bytes([0x77; 32]), 1)
                .set_peers(peers)
                .expect("a valid peer set");
            Routes {
                snapshot: b.build(1).expect("the snapshot builds"),
                warnings,
            }
        }

        /// The node `ip` is routed to, over WireGuard; `None` when no route covers it.
        fn node_of(&self, ip: &str) -> Option<String> {
            let ip: IpAddr = ip.parse().unwrap();
            match self.snapshot.fib.lookup(ip)? {
                NextHop::Remote { node, tunnel } => {
                    assert_eq!(tunnel, Tunnel::WireGuard, "{ip}");
                    Some(self.snapshot.nodes[node as usize].name.clone())
                }
                other => panic!("{ip}: {other:?}"),
            }
        }

        /// The allowed IPs of the peer of node `name`.
        fn allowed(&self, name: &str) -> Vec<String> {
            let peer = self
                .snapshot
                .peers
                .peers
                .iter()
                .find(|p| p.spec.name == name)
                .unwrap_or_else(|| panic!("no peer for {name}"));
            peer.spec
                .allowed_ips
                .iter()
                .map(|p| format!("{}/{}", p.addr(), p.bits()))
                .collect()
        }
    }

    fn three_nodes() -> Calculator {
        let mut calc = Calculator::new("node-a");
        for change in [
            node("node-a", "198.18.250.1", 1, None),
            node("node-b", "198.18.250.2", 2, None),
            node("node-c", "198.18.250.3", 3, Some("198.18.20.0/24")),
            block("198.18.64.0/26", "node-a"),
            block("198.18.64.64/26", "node-b"),
        ] {
            assert!(calc.apply(change).is_empty());
        }
        calc
    }

    #[test]
    fn nodes_sharing_one_pool_route_each_others_blocks_to_each_other() {
        let calc = three_nodes();
        // Node a: b's block of the shared /18 goes to b, its own is not routed remotely.
        let a = Routes::of(&calc, "node-a");
        assert_eq!(a.node_of("198.18.64.70").as_deref(), Some("node-b"));
        assert_eq!(a.node_of("198.18.64.127").as_deref(), Some("node-b"));
        assert_eq!(a.node_of("198.18.64.5"), None, "a's own block");
        assert_eq!(a.node_of("198.18.64.128"), None, "nobody's block yet");
        assert_eq!(a.allowed("node-b"), ["198.18.64.64/26"]);
        // Node c holds no block: its podCIDR is the fallback.
        assert_eq!(a.node_of("198.18.20.9").as_deref(), Some("node-c"));
        assert_eq!(a.allowed("node-c"), ["198.18.20.0/24"]);
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
        // Node b: the mirror image.
        let b = Routes::of(&calc, "node-b");
        assert_eq!(b.node_of("198.18.64.5").as_deref(), Some("node-a"));
        assert_eq!(b.node_of("198.18.64.70"), None, "b's own block");
        assert_eq!(b.allowed("node-a"), ["198.18.64.0/26"]);
    }

    #[test]
    fn a_block_claimed_or_released_changes_routes_and_allowed_ips() {
        let mut calc = three_nodes();
        // b claims a second block: both route to b, both are b's allowed IPs.
        assert!(calc.apply(block("198.18.64.128/26", "node-b")).is_empty());
        let a = Routes::of(&calc, "node-a");
        assert_eq!(a.node_of("198.18.64.130").as_deref(), Some("node-b"));
        assert_eq!(a.allowed("node-b"), ["198.18.64.64/26", "198.18.64.128/26"]);
        // b releases its first block: that range is routed nowhere, the other stays.
        assert!(calc
            .apply(Change::Delete(block_ref("198.18.64.64/26")))
            .is_empty());
        let a = Routes::of(&calc, "node-a");
        assert_eq!(a.node_of("198.18.64.70"), None, "released");
        assert_eq!(a.node_of("198.18.64.130").as_deref(), Some("node-b"));
        assert_eq!(a.allowed("node-b"), ["198.18.64.128/26"]);
        // c claims the released block: now it routes to c, and c's podCIDR is no longer
        // read (it holds a block).
        assert!(calc.apply(block("198.18.64.64/26", "node-c")).is_empty());
        let a = Routes::of(&calc, "node-a");
        assert_eq!(a.node_of("198.18.64.70").as_deref(), Some("node-c"));
        assert_eq!(
            a.node_of("198.18.20.9"),
            None,
            "podCIDR only without blocks"
        );
        assert_eq!(a.allowed("node-c"), ["198.18.64.64/26"]);
        // A relist without c's block takes it away in the same step.
        let kept: Vec<_> = calc
            .objects()
            .into_values()
            .filter(|o| o.resource.object_ref() != block_ref("198.18.64.64/26"))
            .collect();
        assert!(calc
            .apply(Change::Resync {
                kinds: Kind::ALL.to_vec(),
                objects: kept,
            })
            .is_empty());
        let a = Routes::of(&calc, "node-a");
        assert_eq!(a.node_of("198.18.64.70"), None);
        assert_eq!(
            a.allowed("node-c"),
            ["198.18.20.0/24"],
            "back to the fallback"
        );
    }

    #[test]
    fn an_overlapping_block_is_refused_and_an_overlapping_pod_cidr_is_not_routed() {
        let mut calc = three_nodes();
        // A block over a's: refused with its field, a's block keeps routing to a.
        let refused = calc.apply(block("198.18.64.0/25", "node-c"));
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].field, "spec.cidr");
        assert!(
            refused[0]
                .message
                .contains("overlaps IPAMBlock 198-18-64-0-26"),
            "{refused:?}"
        );
        let b = Routes::of(&calc, "node-b");
        assert_eq!(b.node_of("198.18.64.5").as_deref(), Some("node-a"));
        // A blockless node whose podCIDR covers other nodes' blocks: not routed there (the
        // blocks say where those addresses are), with a warning; the peer set stays valid.
        assert!(calc
            .apply(node("node-c", "198.18.250.3", 3, Some("198.18.64.0/24")))
            .is_empty());
        let a = Routes::of(&calc, "node-a");
        assert_eq!(a.node_of("198.18.64.70").as_deref(), Some("node-b"));
        assert_eq!(a.node_of("198.18.64.200"), None);
        assert!(a.allowed("node-c").is_empty());
        assert!(
            a.warnings
                .iter()
                .any(|w| w.contains("node-c") && w.contains("198.18.64.0/24")),
            "{:?}",
            a.warnings
        );
        // A block held by a node without a Node object: not routed, and said.
        assert!(calc.apply(block("198.18.65.0/26", "node-z")).is_empty());
        let a = Routes::of(&calc, "node-a");
        assert_eq!(a.node_of("198.18.65.1"), None);
        assert!(
            a.warnings.iter().any(|w| w.contains("node-z")),
            "{:?}",
            a.warnings
        );
    }
}

#[test]
fn an_ipam_block_rewritten_for_a_lease_leaves_the_model_unchanged() {
    let block = |leases: &str| {
        Change::Upsert(one(&format!(
            "apiVersion: weir.dev/v1\nkind: IPAMBlock\nmetadata:\n  name: 198-18-64-0-26\n\
             spec:\n  cidr: 198.18.64.0/26\n  pool: shared\n  node: node-b\n  leases: {leases}\n"
        )))
    };
    let mut calc = Calculator::new("node-a");
    let first = block("{}");
    assert!(!calc.unchanged_by(&first), "new: a change");
    assert!(calc.apply(first).is_empty());
    // A lease written: the control loop need not recalculate.
    assert!(calc.unchanged_by(&block("{198.18.64.1: {containerID: c1, ifname: eth0}}")));
    // The block handed to another node: a change.
    let moved = Change::Upsert(one(
        "apiVersion: weir.dev/v1\nkind: IPAMBlock\nmetadata:\n  name: 198-18-64-0-26\nspec:\n  \
         cidr: 198.18.64.0/26\n  pool: shared\n  node: node-c\n",
    ));
    assert!(!calc.unchanged_by(&moved));
}

/// The time the calling thread has run on a CPU, from the kernel's scheduler statistics.
fn thread_cpu() -> std::time::Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let ns: u64 = stat
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .expect("run time in ns");
    std::time::Duration::from_nanos(ns)
}

#[test]
fn the_control_loop_waits_for_the_initial_lists_without_spinning() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::{Duration, Instant};

    let (tx, rx) = mpsc::channel::<Update>();
    let stop = Arc::new(AtomicBool::new(false));
    let loop_stop = stop.clone();
    let control = std::thread::spawn(move || {
        let mut calc = Calculator::new("node-a");
        let mut state = DriveState::default();
        let mut published = 0;
        let before = thread_cpu();
        let started = Instant::now();
        drive(
            &rx,
            &mut calc,
            &[Kind::Namespace, Kind::Pod],
            Duration::from_micros(200),
            &loop_stop,
            &mut state,
            |_, _| {
                published += 1;
                true
            },
        );
        (thread_cpu() - before, started.elapsed(), published)
    });
    // A change arrives, then nothing for a while: one kind has listed, the other not, so
    // the batch falls due but cannot be published.
    tx.send(Update::Change {
        change: Change::Upsert(one(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns0\n",
        )),
        noticed: Instant::now(),
    })
    .unwrap();
    tx.send(Update::Synced(Kind::Namespace)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    tx.send(Update::Synced(Kind::Pod)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let (cpu, wall, published) = control.join().unwrap();
    assert_eq!(published, 1, "published once every kind had listed");
    assert!(wall >= Duration::from_millis(500), "{wall:?}");
    assert!(
        cpu < Duration::from_millis(100),
        "the loop ran {cpu:?} on a CPU in {wall:?} of waiting"
    );
}

#[test]
fn a_pod_added_elsewhere_with_a_named_port_rebuilds_no_program_and_names_no_remote_port() {
    let mut calc = Calculator::new("node-a");
    let pod = |name: &str, node: &str, ip: &str| {
        one(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: shop\n  labels:\n    \
             app: web\n  annotations:\n    weir.dev/interface: v{name}\nspec:\n  nodeName: {node}\n  \
             containers:\n  - name: c\n    ports:\n    - name: http\n      containerPort: 8080\n\
             status:\n  podIPs:\n  - ip: {ip}\n"
        ))
    };
    for object in [
        one("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n"),
        one(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: web\n  \
             namespace: shop\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n  \
             - ports:\n    - port: http\n",
        ),
        pod("here", "node-a", "198.18.0.1"),
        pod("there", "node-b", "198.18.0.2"),
    ] {
        assert!(calc.apply(Change::Upsert(object)).is_empty());
    }
    let first = calc.compile();
    let named = |c: &Compiled| -> Vec<Vec<([u8; 16], u8, u16)>> {
        c.tables
            .sets
            .named_ports
            .iter()
            .map(|s| {
                let mut v: Vec<_> = s.iter().copied().collect();
                v.sort_unstable();
                v
            })
            .filter(|v| !v.is_empty())
            .collect()
    };
    let here = weir_dataplane::flow::FlowKey::map_v4([198, 18, 0, 1]);
    // An ingress rule's named port is the local endpoint's own: only it is in the set.
    assert_eq!(named(&first), vec![vec![(here, 6, 8080)]]);
    let built = calc.cache().times.programs_built;

    assert!(calc
        .apply(Change::Upsert(pod("later", "node-b", "198.18.0.3")))
        .is_empty());
    let second = calc.compile();
    assert_eq!(named(&second), vec![vec![(here, 6, 8080)]]);
    assert_eq!(
        calc.cache().times.programs_built,
        built,
        "no program rebuilt"
    );
    assert_eq!(fingerprint(&second), fingerprint(&from_scratch(&calc)));

    // A second local pod with the port joins the set.
    assert!(calc
        .apply(Change::Upsert(pod("also", "node-a", "198.18.0.4")))
        .is_empty());
    let third = calc.compile();
    let also = weir_dataplane::flow::FlowKey::map_v4([198, 18, 0, 4]);
    assert_eq!(named(&third), vec![vec![(here, 6, 8080), (also, 6, 8080)]]);
    assert_eq!(fingerprint(&third), fingerprint(&from_scratch(&calc)));
}
