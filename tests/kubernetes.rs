//! deploy/kubernetes/ as cargo test sees it (the full offline validation, with
//! kubernetes-validate and the ServiceMonitor schema, is `deploy/kubernetes/validate.py` in
//! .ci/run): the ConfigMap's routes.yaml passes `wsedge check` with no warning, the Deployment's
//! grace period is above the drain bound of that file, and the admin token read from a mounted
//! Secret file loses the trailing newline `kubectl create secret --from-file` keeps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

#[derive(serde::Deserialize)]
struct ConfigMap {
    data: BTreeMap<String, String>,
}

/// The ConfigMap's routes.yaml, written where a check can read it (removed on drop).
struct Routes(PathBuf);

impl Routes {
    fn write(name: &str) -> Routes {
        let text = std::fs::read_to_string(dir().join("configmap.yaml")).unwrap();
        let cm: ConfigMap = serde_saphyr::from_str(&text).expect("configmap.yaml parses");
        let dir = std::env::temp_dir().join(format!("wsedge-k8s-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("routes.yaml");
        std::fs::write(&path, &cm.data["routes.yaml"]).unwrap();
        Routes(path)
    }
}

impl Drop for Routes {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
    }
}

#[test]
fn configmap_routes_pass_check_and_the_grace_period_is_above_the_drain_bound() {
    let routes = Routes::write("check");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let ok = wsedge::check::run(&routes.0, &mut out, &mut err);
    let err = String::from_utf8(err).unwrap();
    assert!(ok, "{err}");
    assert!(err.is_empty(), "no warnings expected: {err}");

    let (config, _) = wsedge::config::Config::load(&routes.0).expect("valid");
    let sessions = config.routes.iter().map(|r| r.limits.max_connections).sum();
    let bound = config.shutdown.delay + wsedge::drain::shutdown_bound(&config, sessions);
    let deployment = std::fs::read_to_string(dir().join("deployment.yaml")).unwrap();
    let grace: u64 = deployment
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("terminationGracePeriodSeconds:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("terminationGracePeriodSeconds in deployment.yaml");
    assert!(
        Duration::from_secs(grace) > bound,
        "terminationGracePeriodSeconds {grace} must be above the drain bound {bound:?}"
    );
    // The arithmetic in the Deployment's comment names the same total.
    let total = format!("= {}s after SIGTERM", bound.as_secs());
    assert!(
        bound.subsec_nanos() == 0 && deployment.contains(&total),
        "deployment.yaml's comment should say `{total}`"
    );
}

#[test]
fn a_token_mounted_from_a_secret_file_loses_its_trailing_newline() {
    let routes = Routes::write("token");
    let token = routes.0.with_file_name("token");
    // `kubectl create secret generic --from-file=token=FILE` keeps the file's bytes, newline too.
    std::fs::write(&token, "0123456789abcdef-kubernetes\n").unwrap();
    let yaml = format!(
        "listeners: [{{name: edge, bind: \"127.0.0.1:0\"}}]\nadmin: {{bind: \"0.0.0.0:0\", token_file: {}}}\n\
         routes:\n  - {{name: r, origins: [], backends: [{{name: a, url: \"ws://127.0.0.1:9\"}}]}}\n",
        token.display()
    );
    let path = routes.0.with_file_name("admin.yaml");
    std::fs::write(&path, yaml).unwrap();
    let (config, _) = wsedge::config::Config::load(&path).expect("valid");
    assert_eq!(
        wsedge::admin::auth::token_state(&config),
        wsedge::admin::auth::TokenState::Token("0123456789abcdef-kubernetes".into())
    );
    assert_eq!(wsedge::admin::auth::check_config(&config, None), Ok(()));
}
