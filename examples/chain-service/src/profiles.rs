//! Customer profiles: what the leaf of the chain answers from.
//!
//! The store is seeded deterministically with [`SEEDED_CUSTOMERS`] customers, `cust-0000` to
//! `cust-0999`, each with a display name and a home country.

use std::collections::HashMap;
use std::fmt;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

/// How many customers [`ProfileStore::seeded`] creates.
pub const SEEDED_CUSTOMERS: u32 = 1000;

/// The countries customers live in, assigned round-robin.
const COUNTRIES: [&str; 4] = ["DE", "FR", "NL", "PL"];

/// The body of `POST /work`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkRequest {
    /// Whose work this is, e.g. `cust-0042`.
    pub customer_id: String,
}

/// A customer account, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    /// The customer id, `cust-NNNN`.
    pub id: String,
    /// The display name.
    pub name: String,
    /// The ISO 3166 code of the customer's home country.
    pub country: &'static str,
}

/// A customer's profile, as the leaf answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    /// The customer id, `cust-NNNN`.
    pub customer_id: String,
    /// The display name.
    pub name: String,
    /// The ISO 3166 code of the customer's home country.
    pub country: &'static str,
}

/// Why a request cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkError {
    /// The body was not valid JSON or did not match [`WorkRequest`].
    MalformedBody(String),
    /// No customer has this id.
    UnknownCustomer(String),
}

impl WorkError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            WorkError::MalformedBody(_) => StatusCode::BAD_REQUEST,
            WorkError::UnknownCustomer(_) => StatusCode::NOT_FOUND,
        }
    }

    /// A stable, machine-readable code for the answer body.
    pub fn code(&self) -> &'static str {
        match self {
            WorkError::MalformedBody(_) => "malformed_body",
            WorkError::UnknownCustomer(_) => "unknown_customer",
        }
    }
}

impl fmt::Display for WorkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkError::MalformedBody(why) => write!(f, "malformed body: {why}"),
            WorkError::UnknownCustomer(id) => write!(f, "unknown customer {id:?}"),
        }
    }
}

/// Read-only customer lookup by id.
#[derive(Debug, Clone, Default)]
pub struct ProfileStore {
    by_id: HashMap<String, Customer>,
}

impl ProfileStore {
    /// The deterministic demo population: `cust-0000`..`cust-0999`.
    pub fn seeded() -> Self {
        let by_id = (0..SEEDED_CUSTOMERS)
            .map(|n| {
                let customer = Customer {
                    id: customer_id(n),
                    name: format!("Customer {n:04}"),
                    country: COUNTRIES[n as usize % COUNTRIES.len()],
                };
                (customer.id.clone(), customer)
            })
            .collect();
        ProfileStore { by_id }
    }

    /// Looks a customer up by id.
    pub fn get(&self, id: &str) -> Option<&Customer> {
        self.by_id.get(id)
    }

    /// Number of customers in the store.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when the store has no customers.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// The id of seeded customer number `n`.
pub fn customer_id(n: u32) -> String {
    format!("cust-{n:04}")
}

/// Parses the JSON body of `POST /work`.
pub fn parse_request(body: &[u8]) -> Result<WorkRequest, WorkError> {
    serde_json::from_slice(body).map_err(|e| WorkError::MalformedBody(e.to_string()))
}

/// The leaf's own work: the profile of `customer_id`.
pub fn lookup(store: &ProfileStore, customer_id: &str) -> Result<Profile, WorkError> {
    let customer = store
        .get(customer_id)
        .ok_or_else(|| WorkError::UnknownCustomer(customer_id.to_owned()))?;
    Ok(Profile {
        customer_id: customer.id.clone(),
        name: customer.name.clone(),
        country: customer.country,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_one_thousand_customers() {
        let store = ProfileStore::seeded();
        assert_eq!(store.len(), 1000);
        assert_eq!(store.get("cust-0000").unwrap().country, "DE");
        assert_eq!(store.get("cust-0042").unwrap().name, "Customer 0042");
        assert!(store.get("cust-1000").is_none());
    }

    #[test]
    fn looks_profiles_up() {
        let store = ProfileStore::seeded();
        let profile = lookup(&store, "cust-0003").unwrap();
        assert_eq!(profile.customer_id, "cust-0003");
        assert_eq!(profile.country, "PL");
        let err = lookup(&store, "cust-4242").unwrap_err();
        assert_eq!(err.status(), StatusCode::NOT_FOUND);
        assert_eq!(err.code(), "unknown_customer");
    }

    #[test]
    fn parses_and_rejects_bodies() {
        let ok = parse_request(br#"{"customer_id":"cust-0001"}"#).unwrap();
        assert_eq!(ok.customer_id, "cust-0001");
        let err = parse_request(b"{not json").unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert_eq!(err.code(), "malformed_body");
    }
}
