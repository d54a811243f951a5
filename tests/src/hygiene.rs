//! Secret hygiene checks: given the secret values a scenario used and every
//! text it collected (logs, audit lines, response bodies and headers, error
//! messages), no text may contain any secret in any form it could leak in.

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine as _;

/// What a scenario collected, each text with a label saying where it came
/// from (for the failure message).
#[derive(Debug, Default)]
pub struct Collected {
    texts: Vec<(String, String)>,
}

impl Collected {
    pub fn new() -> Collected {
        Collected::default()
    }

    pub fn add(&mut self, label: impl Into<String>, text: impl Into<String>) {
        self.texts.push((label.into(), text.into()));
    }

    pub fn texts(&self) -> &[(String, String)] {
        &self.texts
    }
}

/// The forms `secret` could appear in: itself, percent-encoded, and base64
/// (standard and URL-safe) at each of the three byte alignments, so a secret
/// found anywhere inside a longer encoded value (`Basic base64(user:pass)`)
/// is found too.
pub fn leak_forms(secret: &str) -> Vec<String> {
    assert!(
        secret.len() >= 12,
        "use secrets of 12+ characters so their encoded forms are distinctive"
    );
    let mut forms = vec![secret.to_string(), percent_encode(secret)];
    for engine in [&STANDARD, &URL_SAFE] {
        for shift in 0..3 {
            let mut shifted = "\0".repeat(shift).into_bytes();
            shifted.extend_from_slice(secret.as_bytes());
            let encoded = engine.encode(&shifted);
            // The first quantum mixes in the shift bytes and the last one
            // whatever follows the secret: only the middle is always there.
            let start = if shift == 0 { 0 } else { 4 };
            let end = encoded.len().saturating_sub(4);
            if end > start + 4 {
                forms.push(encoded[start..end].to_string());
            }
        }
    }
    forms.sort();
    forms.dedup();
    forms
}

/// Every byte but RFC 3986's unreserved ones as `%XX`.
pub fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Panic naming the text and the secret's position in `secrets` (never the
/// secret itself) when any text contains any form of any secret.
pub fn assert_no_secrets(secrets: &[&str], collected: &Collected) {
    assert!(!collected.texts.is_empty(), "nothing was collected");
    let mut leaks = Vec::new();
    for (i, secret) in secrets.iter().enumerate() {
        for form in leak_forms(secret) {
            for (label, text) in &collected.texts {
                if text.contains(&form) {
                    leaks.push(format!("secret #{i} in {label}"));
                }
            }
        }
    }
    leaks.dedup();
    assert!(leaks.is_empty(), "secrets leaked: {leaks:?}");
}
