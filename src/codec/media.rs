//! Media types as they appear in `Content-Type` and `Accept`: the type and its
//! parameters (`as`, `g`, `v`, `stream`, `charset`), the one parser both the
//! encodings and discovery negotiation use.

/// A media type with its parameters, lower-cased where case does not matter.
pub struct MediaRange {
    pub essence: String,
    parameters: Vec<(String, String)>,
}

impl MediaRange {
    /// One media type; a parameter without `=` has an empty value.
    pub fn parse(text: &str) -> MediaRange {
        let mut parts = text.split(';');
        let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let parameters = parts
            .map(|p| {
                let (name, value) = p.split_once('=').unwrap_or((p, ""));
                (
                    name.trim().to_ascii_lowercase(),
                    value.trim().trim_matches('"').to_string(),
                )
            })
            .collect();
        MediaRange {
            essence,
            parameters,
        }
    }

    /// The media types of an `Accept` header, in order.
    pub fn list(accept: &str) -> impl Iterator<Item = MediaRange> + '_ {
        accept.split(',').map(MediaRange::parse)
    }

    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn parameter_names(&self) -> impl Iterator<Item = &str> {
        self.parameters.iter().map(|(n, _)| n.as_str())
    }
}
