//! The in-memory customer store.
//!
//! The store is seeded deterministically with [`SEEDED_CUSTOMERS`] customers, `cust-0000` to
//! `cust-0999`. Each customer may have a preferred [`PaymentMethod`]; customers who never picked
//! one (every id whose number `n` satisfies `n % 20 < 3`, exactly 15% of them) have `None`.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// How many customers [`CustomerStore::seeded`] creates.
pub const SEEDED_CUSTOMERS: u32 = 1000;

/// A way of paying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    /// A debit or credit card.
    Card,
    /// A SEPA bank transfer.
    BankTransfer,
    /// A stored-value wallet.
    Wallet,
}

impl PaymentMethod {
    /// The name used in JSON and in receipts, e.g. `bank_transfer`.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::Card => "card",
            PaymentMethod::BankTransfer => "bank_transfer",
            PaymentMethod::Wallet => "wallet",
        }
    }
}

impl fmt::Display for PaymentMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A customer account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    /// The customer id, `cust-NNNN`.
    pub id: String,
    /// The display name used on receipts.
    pub name: String,
    /// The payment method the customer picked in their settings, if they ever did.
    pub preferred_method: Option<PaymentMethod>,
}

/// Read-only customer lookup by id.
#[derive(Debug, Clone, Default)]
pub struct CustomerStore {
    by_id: HashMap<String, Customer>,
}

impl CustomerStore {
    /// The deterministic demo population: `cust-0000`..`cust-0999`.
    pub fn seeded() -> Self {
        (0..SEEDED_CUSTOMERS).map(seeded_customer).collect()
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

    /// Iterates over all customers, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Customer> {
        self.by_id.values()
    }
}

impl FromIterator<Customer> for CustomerStore {
    fn from_iter<I: IntoIterator<Item = Customer>>(iter: I) -> Self {
        let by_id = iter.into_iter().map(|c| (c.id.clone(), c)).collect();
        CustomerStore { by_id }
    }
}

/// The id of seeded customer number `n`.
pub fn customer_id(n: u32) -> String {
    format!("cust-{n:04}")
}

/// Seeded customer number `n`: 15% have no preferred method, the rest rotate through the methods.
fn seeded_customer(n: u32) -> Customer {
    let preferred_method = if n % 20 < 3 {
        None
    } else {
        Some(match n % 3 {
            0 => PaymentMethod::Card,
            1 => PaymentMethod::BankTransfer,
            _ => PaymentMethod::Wallet,
        })
    };
    Customer {
        id: customer_id(n),
        name: format!("Customer {n:04}"),
        preferred_method,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_one_thousand_customers() {
        let store = CustomerStore::seeded();
        assert_eq!(store.len(), 1000);
        assert!(store.get("cust-0000").is_some());
        assert!(store.get("cust-0999").is_some());
        assert!(store.get("cust-1000").is_none());
        assert!(store.get("").is_none());
    }

    #[test]
    fn exactly_fifteen_percent_have_no_preference() {
        let store = CustomerStore::seeded();
        let without = store
            .iter()
            .filter(|c| c.preferred_method.is_none())
            .count();
        assert_eq!(without, 150);
    }

    #[test]
    fn preferences_are_deterministic() {
        let store = CustomerStore::seeded();
        assert_eq!(store.get("cust-0000").unwrap().preferred_method, None);
        assert_eq!(store.get("cust-0002").unwrap().preferred_method, None);
        assert_eq!(
            store.get("cust-0003").unwrap().preferred_method,
            Some(PaymentMethod::Card)
        );
        assert_eq!(
            store.get("cust-0004").unwrap().preferred_method,
            Some(PaymentMethod::BankTransfer)
        );
        assert_eq!(
            store.get("cust-0005").unwrap().preferred_method,
            Some(PaymentMethod::Wallet)
        );
        assert_eq!(store.get("cust-0021").unwrap().preferred_method, None);
    }

    #[test]
    fn methods_serialise_in_snake_case() {
        let json = serde_json::to_string(&PaymentMethod::BankTransfer).unwrap();
        assert_eq!(json, "\"bank_transfer\"");
        assert_eq!(PaymentMethod::Wallet.to_string(), "wallet");
    }
}
