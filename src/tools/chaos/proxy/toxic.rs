//! Toxics as the API sees them: a type, a stream, a toxicity and integer
//! attributes, read from and written as Toxiproxy's JSON.

use serde_json::{Map, Value, json};

use super::error::ApiError;

/// Which way the bytes go: client to upstream, or upstream to client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Upstream,
    Downstream,
}

impl Stream {
    /// The two streams, in the order Toxiproxy lists their toxics.
    pub const BOTH: [Stream; 2] = [Stream::Upstream, Stream::Downstream];

    pub fn parse(name: &str) -> Option<Stream> {
        match name {
            "upstream" => Some(Stream::Upstream),
            "downstream" => Some(Stream::Downstream),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
        }
    }
}

/// The toxic types Toxiproxy registers (its toxics/ directory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Noop,
    Latency,
    Bandwidth,
    Slicer,
    Timeout,
    ResetPeer,
    LimitData,
    SlowClose,
}

impl Kind {
    const ALL: [Kind; 8] = [
        Kind::Noop,
        Kind::Latency,
        Kind::Bandwidth,
        Kind::Slicer,
        Kind::Timeout,
        Kind::ResetPeer,
        Kind::LimitData,
        Kind::SlowClose,
    ];

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Noop => "noop",
            Kind::Latency => "latency",
            Kind::Bandwidth => "bandwidth",
            Kind::Slicer => "slicer",
            Kind::Timeout => "timeout",
            Kind::ResetPeer => "reset_peer",
            Kind::LimitData => "limit_data",
            Kind::SlowClose => "slow_close",
        }
    }

    /// The attributes, in the order `ToxicSpec::attrs` holds them (all
    /// integers, as in Toxiproxy).
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Noop => &[],
            Kind::Latency => &["latency", "jitter"],
            Kind::Bandwidth => &["rate"],
            Kind::Slicer => &["average_size", "size_variation", "delay"],
            Kind::Timeout | Kind::ResetPeer => &["timeout"],
            Kind::LimitData => &["bytes"],
            Kind::SlowClose => &["delay"],
        }
    }
}

/// One toxic of a proxy.
#[derive(Clone, Debug, PartialEq)]
pub struct ToxicSpec {
    pub name: String,
    pub kind: Kind,
    pub stream: Stream,
    /// The chance, per connection, that the toxic applies (0 to 1).
    pub toxicity: f32,
    /// One value per `kind.fields()`.
    pub attrs: Vec<i64>,
    /// Changes with every create and update, so that connections know
    /// which of their toxics to renew.
    pub revision: u64,
}

impl ToxicSpec {
    /// Parses a `POST /proxies/{proxy}/toxics` body: defaults as
    /// Toxiproxy's (downstream, toxicity 1, name `TYPE_STREAM`).
    pub fn from_json(body: &[u8], revision: u64) -> Result<ToxicSpec, ApiError> {
        let object = parse_object(body)?;
        let kind_name = string_field(&object, "type")?.unwrap_or_default();
        let stream_name = string_field(&object, "stream")?.unwrap_or("downstream".into());
        let stream = Stream::parse(&stream_name).ok_or_else(ApiError::invalid_stream)?;
        let kind = Kind::parse(&kind_name).ok_or_else(ApiError::invalid_type)?;
        let name = string_field(&object, "name")?
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| format!("{}_{}", kind.name(), stream.name()));
        let mut spec = ToxicSpec {
            name,
            kind,
            stream,
            toxicity: 1.0,
            attrs: vec![0; kind.fields().len()],
            revision,
        };
        spec.merge(&object)?;
        Ok(spec)
    }

    /// Applies a `POST /proxies/{proxy}/toxics/{toxic}` body: the
    /// attributes and toxicity given replace those held; the rest stays.
    pub fn update(&mut self, body: &[u8], revision: u64) -> Result<(), ApiError> {
        let object = parse_object(body)?;
        self.merge(&object)?;
        self.revision = revision;
        Ok(())
    }

    fn merge(&mut self, object: &Map<String, Value>) -> Result<(), ApiError> {
        if let Some(toxicity) = object.get("toxicity") {
            let toxicity = toxicity
                .as_f64()
                .ok_or_else(|| ApiError::bad_body("toxicity: expected a number"))?;
            self.toxicity = toxicity as f32;
        }
        match object.get("attributes") {
            None | Some(Value::Null) => Ok(()),
            Some(Value::Object(attributes)) => self.merge_attributes(attributes),
            Some(_) => Err(ApiError::bad_body("attributes: expected an object")),
        }
    }

    fn merge_attributes(&mut self, attributes: &Map<String, Value>) -> Result<(), ApiError> {
        for (i, field) in self.kind.fields().iter().enumerate() {
            if let Some(value) = attributes.get(*field) {
                self.attrs[i] = value.as_i64().ok_or_else(|| {
                    ApiError::bad_body(&format!("attributes.{field}: expected an integer"))
                })?;
            }
        }
        Ok(())
    }

    /// The attribute `field` (0 when the kind has none such).
    pub fn attr(&self, field: &str) -> i64 {
        let fields = self.kind.fields();
        fields
            .iter()
            .position(|f| *f == field)
            .map_or(0, |i| self.attrs[i])
    }

    pub fn to_json(&self) -> Value {
        let attributes: Map<String, Value> = self
            .kind
            .fields()
            .iter()
            .zip(&self.attrs)
            .map(|(field, value)| (field.to_string(), json!(value)))
            .collect();
        json!({
            "attributes": attributes,
            "name": self.name,
            "type": self.kind.name(),
            "stream": self.stream.name(),
            "toxicity": self.toxicity,
        })
    }
}

/// A JSON object body, or the 400 Toxiproxy answers for anything else.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ApiError::bad_body("expected a JSON object")),
        Err(error) => Err(ApiError::bad_body(&error.to_string())),
    }
}

/// A string field, absent or null as `None`; another type is a 400.
pub fn string_field(object: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(ApiError::bad_body(&format!("{key}: expected a string"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_as_toxiproxy() {
        let spec =
            ToxicSpec::from_json(br#"{"type":"latency","attributes":{"latency":5}}"#, 1).unwrap();
        assert_eq!(spec.name, "latency_downstream");
        assert_eq!(spec.stream, Stream::Downstream);
        assert_eq!(spec.toxicity, 1.0);
        assert_eq!(spec.attr("latency"), 5);
        assert_eq!(spec.attr("jitter"), 0);
    }

    #[test]
    fn update_merges() {
        let body =
            br#"{"type":"slicer","stream":"upstream","attributes":{"average_size":9,"delay":3}}"#;
        let mut spec = ToxicSpec::from_json(body, 1).unwrap();
        spec.update(br#"{"attributes":{"delay":7},"toxicity":0.5}"#, 2)
            .unwrap();
        assert_eq!((spec.attr("average_size"), spec.attr("delay")), (9, 7));
        assert_eq!(spec.toxicity, 0.5);
        assert_eq!(spec.revision, 2);
    }

    #[test]
    fn bad_input_is_a_400() {
        for body in [
            &b"{"[..],
            br#"{"type":"nope"}"#,
            br#"{"type":"latency","stream":"sideways"}"#,
            br#"{"type":"latency","attributes":{"latency":"5"}}"#,
            br#"[1]"#,
        ] {
            let error = ToxicSpec::from_json(body, 1).unwrap_err();
            assert_eq!(error.status, 400, "{}", String::from_utf8_lossy(body));
        }
    }
}
