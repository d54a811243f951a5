//! X.509-SVIDs: client certificates checked against a trust bundle.
