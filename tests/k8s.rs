//! The Kubernetes manifests against the code they deploy: the ConfigMap's TOML loads with the
//! daemon's own configuration loader, and the ports, paths, flags, probes and timeouts in the
//! manifests are the ones the binary uses (read from the code, not copied).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use mailpolicyd::config::{self, Flags};
use mailpolicyd::serve::admin::{LIVE_PATH, METRICS_PATH, READY_PATH};
use yaml_rust2::{Yaml, YamlLoader};

fn manifest(name: &str) -> Yaml {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

fn find<'a>(list: &'a Yaml, key: &str, value: &str) -> &'a Yaml {
    list.as_vec()
        .unwrap()
        .iter()
        .find(|y| y[key].as_str() == Some(value))
        .unwrap_or_else(|| panic!("no {key}={value}"))
}

#[test]
fn manifests_match_the_binary() {
    let cm = manifest("configmap.yaml");
    let toml = cm["data"]["mailpolicyd.toml"].as_str().unwrap();
    let cfg = match config::load(Some(toml), &BTreeMap::new(), &Flags::default()) {
        Ok(c) => c,
        Err(problems) => panic!("the ConfigMap's TOML does not load: {problems:#?}"),
    };

    let ds = manifest("daemonset.yaml");
    let pod = &ds["spec"]["template"]["spec"];
    let c = find(&pod["containers"], "name", "mailpolicyd");

    // Ports: the admin listener, the container port, the Service, the scrape annotations.
    let admin = cfg
        .daemon
        .admin
        .expect("the admin endpoint must be on for probes and scraping");
    assert!(
        admin.ip().is_unspecified(),
        "in a pod the admin endpoint listens on the pod IP"
    );
    let port = find(&c["ports"], "name", "metrics")["containerPort"]
        .as_i64()
        .unwrap();
    assert_eq!(port, i64::from(admin.port()));
    let svc = manifest("service.yaml");
    assert_eq!(
        find(&svc["spec"]["ports"], "name", "metrics")["port"].as_i64(),
        Some(port)
    );
    for annotations in [
        &ds["spec"]["template"]["metadata"]["annotations"],
        &svc["metadata"]["annotations"],
    ] {
        assert_eq!(
            annotations["prometheus.io/port"].as_str(),
            Some(port.to_string().as_str())
        );
        assert_eq!(
            annotations["prometheus.io/path"].as_str(),
            Some(METRICS_PATH)
        );
    }

    // Probes hit the paths the admin endpoint serves.
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some(LIVE_PATH)
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some(READY_PATH)
    );
    assert_eq!(
        c["startupProbe"]["httpGet"]["path"].as_str(),
        Some(READY_PATH)
    );

    // The flags are the binary's own, and --config points into the ConfigMap mount.
    let args: Vec<&str> = c["args"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let help = Command::new(env!("CARGO_BIN_EXE_mailpolicyd"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert_eq!(args[0], "serve");
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(flag),
            "{flag} is not a flag of `mailpolicyd serve`"
        );
    }
    let config_path = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    let mount = find(&c["volumeMounts"], "name", "config")["mountPath"]
        .as_str()
        .unwrap();
    assert_eq!(
        Path::new(config_path),
        Path::new(mount).join("mailpolicyd.toml")
    );

    // The socket lives in the hostPath directory (mounted as a directory), with group access
    // for the consumers, whose supplemental group is the daemon's group.
    let socket_dir = cfg
        .daemon
        .socket
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let sock_mount = find(&c["volumeMounts"], "mountPath", &socket_dir);
    let vol = find(
        &pod["volumes"],
        "name",
        sock_mount["name"].as_str().unwrap(),
    );
    assert_eq!(vol["hostPath"]["path"].as_str(), Some(socket_dir.as_str()));
    assert_eq!(vol["hostPath"]["type"].as_str(), Some("DirectoryOrCreate"));
    assert_eq!(
        cfg.daemon.socket_cfg.mode & 0o060,
        0o060,
        "the group can connect"
    );
    assert_eq!(
        std::fs::Permissions::from_mode(cfg.daemon.socket_cfg.mode).mode() & 0o007,
        0,
        "others cannot"
    );
    let group = c["securityContext"]["runAsGroup"].as_i64().unwrap();
    let filter = manifest("example-filter.yaml");
    let fpod = &filter["spec"]["template"]["spec"];
    assert!(
        fpod["securityContext"]["supplementalGroups"]
            .as_vec()
            .unwrap()
            .iter()
            .any(|g| g.as_i64() == Some(group))
    );
    let fmount = &fpod["containers"][0]["volumeMounts"][0];
    assert_eq!(fmount["readOnly"].as_bool(), Some(true));
    assert_eq!(fmount["mountPath"].as_str(), Some(socket_dir.as_str()));
    assert_eq!(
        fpod["volumes"][0]["hostPath"]["path"].as_str(),
        Some(socket_dir.as_str())
    );
    let env = find(&fpod["containers"][0]["env"], "name", "MAILPOLICYD_SOCKET");
    assert_eq!(env["value"].as_str(), cfg.daemon.socket.to_str());

    // The snapshot survives a rolling update: it is on a hostPath.
    let snap_dir = cfg
        .daemon
        .snapshot
        .as_ref()
        .unwrap()
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let snap_mount = find(&c["volumeMounts"], "mountPath", &snap_dir);
    assert!(
        find(
            &pod["volumes"],
            "name",
            snap_mount["name"].as_str().unwrap()
        )["hostPath"]
            .as_hash()
            .is_some()
    );

    // The grace period outlasts the drain.
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert!(
        cfg.daemon.socket_cfg.drain_timeout.as_secs() as i64 + 5 <= grace,
        "drain {:?} vs grace {grace}",
        cfg.daemon.socket_cfg.drain_timeout
    );

    // Hardening: no host network, no capabilities, read-only root, non-root, seccomp.
    assert!(pod["hostNetwork"].is_badvalue() || pod["hostNetwork"].as_bool() == Some(false));
    assert_eq!(
        c["securityContext"]["capabilities"]["drop"][0].as_str(),
        Some("ALL")
    );
    assert!(c["securityContext"]["capabilities"]["add"].is_badvalue());
    assert_eq!(
        c["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    assert_eq!(c["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    assert_eq!(
        ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"].as_str(),
        Some("10%")
    );
    assert_eq!(
        pod["priorityClassName"].as_str(),
        Some("system-node-critical")
    );
    assert_eq!(
        manifest("serviceaccount.yaml")["automountServiceAccountToken"].as_bool(),
        Some(false)
    );
}
