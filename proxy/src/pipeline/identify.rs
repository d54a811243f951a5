//! Identify: who is calling. Today the listener's static identity (sidecar
//! mode); mTLS SPIFFE IDs and JWT workload tokens plug in here later.

use std::sync::Arc;

use crate::error::ProxyError;

use super::Caller;

pub fn identify(caller: &Caller) -> Result<Arc<str>, ProxyError> {
    caller.identity.clone().ok_or(ProxyError::Unidentified)
}
