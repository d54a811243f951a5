//! Walks over JSON text that serde has already found valid, building
//! nothing: how deeply it nests, and where an object's members are. Inside
//! a string each walk jumps from quote to backslash to quote (memchr), so
//! kilobytes of argument text cost a vectorized search, not a parse.
//!
//! Every index is checked: text that is not valid JSON after all gives
//! `None` (or a shallower depth), never a panic.

/// How deeply arrays and objects nest in `json` (a scalar is 0). A
/// bracket inside a string is text.
pub fn depth(json: &[u8]) -> usize {
    let (mut level, mut deepest, mut at) = (0usize, 0usize, 0usize);
    while let Some(&byte) = json.get(at) {
        match byte {
            b'"' => match string_end(json, at) {
                Some(end) => at = end,
                None => break,
            },
            b'[' | b'{' => {
                level += 1;
                deepest = deepest.max(level);
            }
            b']' | b'}' => level = level.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    deepest
}

/// The members of the object `json`, in order: each key as its quoted
/// text, and its value's text. `None` when `json` is not an object.
pub fn members(json: &str) -> Option<Vec<(&str, &str)>> {
    let bytes = json.as_bytes();
    let mut at = space(bytes, 0);
    if *bytes.get(at)? != b'{' {
        return None;
    }
    at = space(bytes, at + 1);
    let mut found = Vec::new();
    if *bytes.get(at)? == b'}' {
        return Some(found);
    }
    loop {
        if *bytes.get(at)? != b'"' {
            return None;
        }
        let key_end = string_end(bytes, at)?;
        let key = json.get(at..=key_end)?;
        at = space(bytes, key_end + 1);
        if *bytes.get(at)? != b':' {
            return None;
        }
        let start = space(bytes, at + 1);
        let end = value_end(bytes, start)?;
        found.push((key, json.get(start..end)?));
        at = space(bytes, end);
        match *bytes.get(at)? {
            b',' => at = space(bytes, at + 1),
            b'}' => return Some(found),
            _ => return None,
        }
    }
}

/// The index of the quote that closes the string whose opening quote is
/// at `open`.
fn string_end(json: &[u8], open: usize) -> Option<usize> {
    let mut at = open + 1;
    loop {
        let found = at + memchr::memchr2(b'"', b'\\', json.get(at..)?)?;
        if json[found] == b'"' {
            return Some(found);
        }
        // An escape: the character after the backslash is text.
        at = found + 2;
    }
}

/// Where the value that starts at `at` ends (exclusive).
fn value_end(json: &[u8], at: usize) -> Option<usize> {
    match *json.get(at)? {
        b'"' => string_end(json, at).map(|end| end + 1),
        b'{' | b'[' => {
            let (mut level, mut at) = (0usize, at);
            loop {
                match *json.get(at)? {
                    b'"' => at = string_end(json, at)?,
                    b'{' | b'[' => level += 1,
                    b'}' | b']' => {
                        level -= 1;
                        if level == 0 {
                            return Some(at + 1);
                        }
                    }
                    _ => {}
                }
                at += 1;
            }
        }
        // A number, `true`, `false` or `null`: up to what follows it.
        _ => Some(
            json.get(at..)?
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
                .map_or(json.len(), |n| at + n),
        ),
    }
}

/// The first index from `at` that is not JSON whitespace.
fn space(json: &[u8], at: usize) -> usize {
    let rest = json.get(at..).unwrap_or_default();
    at + rest.iter().take_while(|b| b.is_ascii_whitespace()).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map, Value};

    /// What serde makes of the same members.
    fn by_serde(text: &str) -> Vec<(String, Value)> {
        let object: Map<String, Value> = serde_json::from_str(text).unwrap();
        let mut read: Vec<(String, Value)> = object.into_iter().collect();
        read.sort_by(|a, b| a.0.cmp(&b.0));
        read
    }

    fn by_scan(text: &str) -> Vec<(String, Value)> {
        let mut read: Vec<(String, Value)> = members(text)
            .unwrap()
            .into_iter()
            .map(|(key, value)| {
                (
                    serde_json::from_str(key).unwrap(),
                    serde_json::from_str(value).unwrap(),
                )
            })
            .collect();
        read.sort_by(|a, b| a.0.cmp(&b.0));
        read
    }

    #[test]
    fn members_are_found_as_serde_reads_them() {
        for text in [
            "{}",
            " { } ",
            r#"{"a":1}"#,
            "{ \"a\" :\n -1.5e3 ,\t\"b\" : true , \"c\":null }",
            r#"{"q\"}": "x\\", "r": "]}\"{[", "s": "\u00e9\ud83d\ude00"}"#,
            r#"{"nested": {"a": [1, {"b": "}"}], "c": {}}, "list": [[], [[]], "]"], "n": 0}"#,
            r#"{"é": "ü", "": ""}"#,
        ] {
            assert_eq!(by_scan(text), by_serde(text), "{text}");
        }
        let long = json!({"project": "acme", "context": "x".repeat(5000), "labels": ["a"]});
        assert_eq!(by_scan(&long.to_string()), by_serde(&long.to_string()));
    }

    #[test]
    fn what_is_not_an_object_is_none_never_a_panic() {
        for text in [
            "",
            "[]",
            "1",
            "\"x\"",
            "{",
            "{\"a\"",
            "{\"a\":",
            "{\"a\":1",
            "{\"a\" 1}",
            "{1:2}",
            "{\"a\":\"",
            "{\"a\":[1",
            "{\"a\":1,}",
        ] {
            assert_eq!(members(text), None, "{text}");
            depth(text.as_bytes());
        }
    }

    #[test]
    fn depth_counts_containers_only() {
        let depth = |json: &str| depth(json.as_bytes());
        assert_eq!(depth(r#""x""#), 0);
        assert_eq!(depth("{}"), 1);
        assert_eq!(depth(r#"{"a": [1, {"b": []}]}"#), 4);
        // Brackets in strings, escaped quotes included, are text.
        assert_eq!(depth(r#"{"[[": "]\"[[{", "b": ["\\", [2]]}"#), 3);
    }
}
