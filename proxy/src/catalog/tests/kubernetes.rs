//! config/catalog/kubernetes.yaml

use super::super::RiskClass::*;
use super::{check_table, shipped, Row};

const H: &str = "kubernetes.default.svc";
const POD: &str = "kubernetes/namespaces/prod/pods/web-1";
const DEP: &str = "kubernetes/namespaces/prod/deployments/web";

#[rustfmt::skip]
const ROWS: &[Row] = &[
    ("GET", H, "/api/v1/namespaces/prod/pods", &[], "kubernetes:pods.list", Read, "kubernetes/namespaces/prod/pods", "internal"),
    ("GET", H, "/api/v1/namespaces/prod/pods?watch=1&resourceVersion=10", &[], "kubernetes:pods.list", Read, "kubernetes/namespaces/prod/pods", "internal"),
    ("GET", H, "/api/v1/pods", &[], "kubernetes:pods.list", Read, "kubernetes/pods", "internal"),
    ("GET", H, "/api/v1/namespaces/prod/pods/web-1", &[], "kubernetes:pods.get", Read, POD, "internal"),
    ("POST", H, "/api/v1/namespaces/prod/pods", &[], "kubernetes:pods.create", Write, "kubernetes/namespaces/prod/pods", "internal"),
    ("DELETE", H, "/api/v1/namespaces/prod/pods/web-1", &[], "kubernetes:pods.delete", ProdChange, POD, "internal"),
    ("GET", H, "/api/v1/namespaces/prod/pods/web-1/log?container=app", &[], "kubernetes:pods.log", Read, POD, "confidential"),
    ("GET", H, "/api/v1/namespaces/prod/pods/web-1/exec?command=sh&stdin=true", &[], "kubernetes:pods.exec", CodeExec, POD, "internal"),
    ("POST", H, "/api/v1/namespaces/prod/pods/web-1/exec?command=ls", &[], "kubernetes:pods.exec", CodeExec, POD, "internal"),
    ("GET", H, "/api/v1/namespaces/prod/pods/web-1/attach", &[], "kubernetes:pods.attach", CodeExec, POD, "internal"),
    ("POST", H, "/api/v1/namespaces/prod/pods/web-1/attach", &[], "kubernetes:pods.attach", CodeExec, POD, "internal"),
    ("GET", H, "/api/v1/namespaces/prod/secrets", &[], "kubernetes:secrets.list", SecretsRead, "kubernetes/namespaces/prod/secrets", "restricted"),
    ("GET", H, "/api/v1/secrets", &[], "kubernetes:secrets.list", SecretsRead, "kubernetes/secrets", "restricted"),
    ("GET", H, "/api/v1/namespaces/prod/secrets/db", &[], "kubernetes:secrets.get", SecretsRead, "kubernetes/namespaces/prod/secrets/db", "restricted"),
    ("PATCH", H, "/api/v1/namespaces/prod/secrets/db", &[], "kubernetes:secrets.patch", ProdChange, "kubernetes/namespaces/prod/secrets/db", "restricted"),
    ("GET", H, "/api/v1/namespaces/prod/configmaps", &[], "kubernetes:configmaps.list", Read, "kubernetes/namespaces/prod/configmaps", "internal"),
    ("GET", H, "/api/v1/namespaces/prod/configmaps/app", &[], "kubernetes:configmaps.get", Read, "kubernetes/namespaces/prod/configmaps/app", "internal"),
    ("GET", H, "/apis/apps/v1/namespaces/prod/deployments", &[], "kubernetes:deployments.list", Read, "kubernetes/namespaces/prod/deployments", "internal"),
    ("GET", H, "/apis/apps/v1/namespaces/prod/deployments/web", &[], "kubernetes:deployments.get", Read, DEP, "internal"),
    ("POST", H, "/apis/apps/v1/namespaces/prod/deployments", &[], "kubernetes:deployments.create", Write, "kubernetes/namespaces/prod/deployments", "internal"),
    ("PATCH", H, "/apis/apps/v1/namespaces/prod/deployments/web", &[], "kubernetes:deployments.patch", ProdChange, DEP, "internal"),
    ("PUT", H, "/apis/apps/v1/namespaces/prod/deployments/web", &[], "kubernetes:deployments.update", ProdChange, DEP, "internal"),
    ("DELETE", H, "/apis/apps/v1/namespaces/prod/deployments/web", &[], "kubernetes:deployments.delete", ProdChange, DEP, "internal"),
    ("PATCH", H, "/apis/apps/v1/namespaces/prod/deployments/web/scale", &[], "kubernetes:deployments.scale.patch", ProdChange, DEP, "internal"),
    ("DELETE", H, "/api/v1/namespaces/prod", &[], "kubernetes:namespaces.delete", ProdChange, "kubernetes/namespaces/prod", "internal"),
    ("GET", H, "/api/v1/namespaces/prod/events", &[], "kubernetes:events.list", Read, "kubernetes/namespaces/prod/events", "internal"),
    ("GET", H, "/apis/events.k8s.io/v1/namespaces/prod/events", &[], "kubernetes:events.list", Read, "kubernetes/namespaces/prod/events", "internal"),
    // discovery, including the backtrack from `apps/v1` (static) to `{group}/{version}`
    ("GET", H, "/version", &[], "kubernetes:discovery", Read, "kubernetes", "internal"),
    ("GET", H, "/api", &[], "kubernetes:discovery", Read, "kubernetes", "internal"),
    ("GET", H, "/apis/apps/v1", &[], "kubernetes:discovery", Read, "kubernetes", "internal"),
    ("GET", H, "/apis/batch/v1", &[], "kubernetes:discovery", Read, "kubernetes", "internal"),
    // every in-cluster name
    ("GET", "kubernetes", "/api/v1/pods", &[], "kubernetes:pods.list", Read, "kubernetes/pods", "internal"),
    ("GET", "kubernetes.default", "/api/v1/pods", &[], "kubernetes:pods.list", Read, "kubernetes/pods", "internal"),
    ("GET", "kubernetes.default.svc.cluster.local", "/api/v1/pods", &[], "kubernetes:pods.list", Read, "kubernetes/pods", "internal"),
    // unknown
    ("GET", H, "/api/v1/namespaces/prod/pods/web-1/portforward", &[], "kubernetes:unknown", Unknown, "kubernetes", "internal"),
    ("GET", H, "/apis/batch/v1/namespaces/prod/jobs", &[], "kubernetes:unknown", Unknown, "kubernetes", "internal"),
    ("PATCH", H, "/api/v1/namespaces/prod/pods/web-1/exec", &[], "kubernetes:unknown", Unknown, "kubernetes", "internal"),
];

#[test]
fn kubernetes_table() {
    check_table(shipped(), ROWS);
}
