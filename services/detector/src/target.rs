//! Scrape targets: a service name and the `/metrics` endpoint it is watched through.

use std::collections::BTreeMap;
use std::time::SystemTime;

/// A validated scrape target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSpec {
    pub service: String,
    pub address: String,
    pub labels: BTreeMap<String, String>,
    url: String,
}

impl TargetSpec {
    /// Checks the service name and address; the error says what is wrong.
    pub fn new(
        service: String,
        address: String,
        labels: BTreeMap<String, String>,
    ) -> Result<Self, String> {
        let service = service.trim().to_owned();
        if service.is_empty() {
            return Err("service must not be empty".into());
        }
        if service.len() > 128 || service.chars().any(|c| c.is_control() || c == '/') {
            return Err(format!(
                "service {service:?} must be at most 128 characters without '/' or control characters"
            ));
        }
        let address = address.trim().to_owned();
        let url = if address.starts_with("http://") || address.starts_with("https://") {
            address.clone()
        } else {
            format!("http://{address}/metrics")
        };
        let parsed = reqwest::Url::parse(&url)
            .map_err(|error| format!("address {address:?} is not a valid endpoint: {error}"))?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(format!("address {address:?} has no host"));
        }
        Ok(Self {
            service,
            address,
            labels,
            url,
        })
    }

    /// The URL scraped.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// How the last scrape of a target went.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TargetHealth {
    pub up: bool,
    pub last_scrape_at: Option<SystemTime>,
    pub last_error: Option<String>,
}

/// A target with its health, as listed.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetView {
    pub spec: TargetSpec,
    pub health: TargetHealth,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_becomes_a_metrics_url_and_urls_are_kept() {
        let spec = TargetSpec::new("pay".into(), "127.0.0.1:8080".into(), BTreeMap::new()).unwrap();
        assert_eq!(spec.url(), "http://127.0.0.1:8080/metrics");
        let spec = TargetSpec::new(
            "pay".into(),
            "http://127.0.0.1:8080/custom".into(),
            BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(spec.url(), "http://127.0.0.1:8080/custom");
    }

    #[test]
    fn rejects_empty_service_and_garbage_address() {
        assert!(TargetSpec::new(" ".into(), "127.0.0.1:1".into(), BTreeMap::new()).is_err());
        assert!(TargetSpec::new("a/b".into(), "127.0.0.1:1".into(), BTreeMap::new()).is_err());
        assert!(TargetSpec::new("pay".into(), "::not a url".into(), BTreeMap::new()).is_err());
    }
}
