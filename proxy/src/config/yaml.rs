//! YAML parsing with errors that point at `file:line:column`.

use serde::de::DeserializeOwned;

/// A YAML document that did not parse or did not fit the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct YamlError {
    /// `file:line:column`, or the file alone when the parser gave no position.
    pub location: String,
    pub message: String,
}

pub fn parse<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, YamlError> {
    serde_saphyr::from_str(text).map_err(|err| {
        let location = match err.location() {
            Some(at) => format!("{file}:{}:{}", at.line(), at.column()),
            None => file.to_string(),
        };
        // The rendered error repeats the position and a source snippet; the
        // first line alone reads well after our own `file:line:column`.
        let rendered = err.without_snippet().to_string();
        let message = rendered
            .lines()
            .next()
            .unwrap_or("invalid YAML")
            .trim()
            .to_string();
        YamlError { location, message }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Shape {
        name: String,
    }

    #[test]
    fn unknown_field_names_line_and_column() {
        let err = parse::<Shape>("x.yaml", "name: a\nnmae: b\n").unwrap_err();
        assert_eq!(err.location, "x.yaml:2:1", "{err}");
        assert!(err.message.contains("nmae"), "{err}");
    }

    #[test]
    fn bad_syntax_names_the_file() {
        let err = parse::<Shape>("x.yaml", "name: [a\n").unwrap_err();
        assert!(err.location.starts_with("x.yaml:"), "{err}");
    }
}
