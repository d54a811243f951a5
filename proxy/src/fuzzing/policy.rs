//! Cedar policy files, loaded against the schema the shipped catalog
//! generates, as `validate`, start-up and every reload load them.

use std::sync::OnceLock;

use cedar_policy::{Schema, Validator};

use crate::decision::policies::{self, PolicyError};
use crate::decision::schema_text;

use super::shipped_catalog;

/// A policy file's text, split, parsed and validated in strict mode as
/// `validate`, start-up and every reload do it: a refusal points at a line
/// of the file, and every policy that loads has its metadata. Building a
/// whole engine parses the schema again (tens of milliseconds), which
/// would slow the fuzzer a hundredfold, so decisions are left to the
/// engine's own tests.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sources = [("fuzz.cedar".to_string(), text.to_string())];
    let loaded = policies::parse_sources(&sources)
        .and_then(|loaded| policies::validate(&loaded, validator()).map(|()| loaded));
    match loaded {
        Ok(loaded) => assert_eq!(loaded.set.num_of_policies(), loaded.meta.len()),
        Err(PolicyError::Invalid { location, .. }) => {
            let line = location
                .strip_prefix("fuzz.cedar:")
                .and_then(|rest| rest.split(':').next())
                .and_then(|line| line.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("error not located in the file: {location}"));
            assert!(
                (1..=text.matches('\n').count() + 1).contains(&line),
                "{location}"
            );
        }
        Err(err @ PolicyError::Io { .. }) => panic!("no file was read: {err}"),
    }
}

/// Claims selected in `identity.claims` (`principal.claims.team`).
const CLAIMS: [&str; 1] = ["team"];

/// Strict validation against the schema the shipped catalog generates,
/// parsed once.
fn validator() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let text = schema_text(shipped_catalog().actions(), &CLAIMS.map(String::from));
        let (schema, _) = Schema::from_cedarschema_str(&text).expect("the generated schema parses");
        Validator::new(schema)
    })
}
