//! Payment processing: validation, method selection, fees and receipts.
//!
//! A payment request names a customer and an amount in minor units (cents). Processing goes
//! through four steps, each a small function in this module so it can be tested on its own:
//!
//! 1. [`parse_request`] and [`validate`] check the request shape (customer id syntax, amount
//!    bounds) without touching any state;
//! 2. the customer is looked up in the [`CustomerStore`];
//! 3. a [`PaymentMethod`] is chosen and the processing fee for that method is computed with
//!    [`compute_fee`], which rounds half-to-even to whole cents;
//! 4. a [`Receipt`] is produced with a fresh payment id and a human-readable summary.
//!
//! All amounts are integers in the smallest currency unit. Floating point never touches money:
//! fees are computed in basis points with integer arithmetic and an explicit rounding rule.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::customers::{CustomerStore, PaymentMethod};

/// The method used when a payment is not routed anywhere more specific.
pub const DEFAULT_METHOD: PaymentMethod = PaymentMethod::Card;

/// The currency every amount is expressed in (ISO 4217).
pub const CURRENCY: &str = "EUR";

/// Number of minor units in one major unit of [`CURRENCY`].
pub const CENTS_PER_UNIT: u64 = 100;

/// The longest customer id accepted, in bytes.
pub const MAX_CUSTOMER_ID_LEN: usize = 64;

/// One basis point is a hundredth of a percent.
const BASIS_POINTS_PER_UNIT: u64 = 10_000;

/// The body of `POST /pay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRequest {
    /// Who pays, e.g. `cust-0042`.
    pub customer_id: String,
    /// How much, in cents. Must be positive.
    pub amount_cents: i64,
}

/// The answer to a successful payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// A unique id for this payment, `pay-NNNNNNNN`.
    pub payment_id: String,
    /// The customer who paid.
    pub customer_id: String,
    /// The method the payment went through.
    pub method: PaymentMethod,
    /// The amount requested, in cents.
    pub amount_cents: u64,
    /// The processing fee, in cents.
    pub fee_cents: u64,
    /// What the customer is charged: amount plus fee, in cents.
    pub total_cents: u64,
    /// The ISO 4217 currency code.
    pub currency: String,
    /// One line for humans, e.g. `charged 12.59 EUR to Customer 0003 by card (fee 0.25)`.
    pub summary: String,
}

/// Why a payment was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentError {
    /// The body was not valid JSON or did not match [`PaymentRequest`].
    MalformedBody(String),
    /// The customer id is empty, too long, or has characters outside `[A-Za-z0-9-]`.
    InvalidCustomerId(String),
    /// The amount is zero or negative.
    NonPositiveAmount(i64),
    /// No customer has this id.
    UnknownCustomer(String),
}

impl PaymentError {
    /// The HTTP status this error maps to.
    pub fn status(&self) -> StatusCode {
        match self {
            PaymentError::UnknownCustomer(_) => StatusCode::NOT_FOUND,
            PaymentError::MalformedBody(_)
            | PaymentError::InvalidCustomerId(_)
            | PaymentError::NonPositiveAmount(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// A stable machine-readable code for clients, e.g. `unknown_customer`.
    pub fn code(&self) -> &'static str {
        match self {
            PaymentError::MalformedBody(_) => "malformed_body",
            PaymentError::InvalidCustomerId(_) => "invalid_customer_id",
            PaymentError::NonPositiveAmount(_) => "non_positive_amount",
            PaymentError::UnknownCustomer(_) => "unknown_customer",
        }
    }
}

impl fmt::Display for PaymentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PaymentError::MalformedBody(reason) => write!(f, "malformed request body: {reason}"),
            PaymentError::InvalidCustomerId(id) => write!(f, "invalid customer id {id:?}"),
            PaymentError::NonPositiveAmount(amount) => {
                write!(f, "amount must be positive, got {amount} cents")
            }
            PaymentError::UnknownCustomer(id) => write!(f, "unknown customer {id:?}"),
        }
    }
}

impl std::error::Error for PaymentError {}

/// Issues payment ids: `pay-00000001`, `pay-00000002`, ...
#[derive(Debug, Default)]
pub struct PaymentIds {
    issued: AtomicU64,
}

impl PaymentIds {
    /// The next unused id.
    pub fn next_id(&self) -> String {
        let n = self.issued.fetch_add(1, Ordering::Relaxed) + 1;
        format!("pay-{n:08}")
    }
}

/// The fee charged by one payment method: a percentage (in basis points) plus a fixed part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeSchedule {
    /// The proportional part, in basis points of the amount.
    pub basis_points: u64,
    /// The fixed part, in cents, added once per payment.
    pub fixed_cents: u64,
}

/// The fee schedule for `method`. The rates follow the acquirer contract; changing them needs
/// a sign-off from finance.
pub fn fee_schedule(method: PaymentMethod) -> FeeSchedule {
    let (basis_points, fixed_cents) = match method {
        PaymentMethod::Card => (140, 25),
        PaymentMethod::BankTransfer => (20, 0),
        PaymentMethod::Wallet => (190, 10),
    };
    FeeSchedule {
        basis_points,
        fixed_cents,
    }
}

/// Divides `numerator` by `denominator`, rounding half to even ("banker's rounding").
///
/// Rounding half to even keeps the sum of many rounded fees unbiased, which matters when fees are
/// reconciled in bulk. `denominator` must not be zero.
pub fn div_round_half_even(numerator: u64, denominator: u64) -> u64 {
    let quotient = numerator / denominator;
    let remainder = numerator % denominator;
    let twice = remainder * 2;
    if twice > denominator || (twice == denominator && quotient % 2 == 1) {
        quotient + 1
    } else {
        quotient
    }
}

/// The processing fee for paying `amount_cents` with `method`, in whole cents.
pub fn compute_fee(amount_cents: u64, method: PaymentMethod) -> u64 {
    let schedule = fee_schedule(method);
    let proportional = div_round_half_even(
        amount_cents.saturating_mul(schedule.basis_points),
        BASIS_POINTS_PER_UNIT,
    );
    proportional + schedule.fixed_cents
}

/// Formats an amount in cents as major units with two decimals, e.g. `1234` as `12.34`.
pub fn format_cents(cents: u64) -> String {
    format!("{}.{:02}", cents / CENTS_PER_UNIT, cents % CENTS_PER_UNIT)
}

/// Parses the JSON body of `POST /pay`.
pub fn parse_request(body: &[u8]) -> Result<PaymentRequest, PaymentError> {
    serde_json::from_slice(body).map_err(|e| PaymentError::MalformedBody(e.to_string()))
}

/// Checks a request without looking at any state and returns the amount as unsigned cents.
pub fn validate(request: &PaymentRequest) -> Result<u64, PaymentError> {
    let id = &request.customer_id;
    let well_formed = !id.is_empty()
        && id.len() <= MAX_CUSTOMER_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !well_formed {
        return Err(PaymentError::InvalidCustomerId(id.clone()));
    }
    match u64::try_from(request.amount_cents) {
        Ok(amount) if amount > 0 => Ok(amount),
        _ => Err(PaymentError::NonPositiveAmount(request.amount_cents)),
    }
}

/// Processes one payment: validates it, finds the customer, picks the method, computes the fee
/// and returns the receipt.
///
/// Nothing is persisted: the service is a demo and a receipt is all a caller gets back.
pub fn process_payment(
    customers: &CustomerStore,
    ids: &PaymentIds,
    request: &PaymentRequest,
) -> Result<Receipt, PaymentError> {
    let amount_cents = validate(request)?;
    let customer = customers
        .get(&request.customer_id)
        .ok_or_else(|| PaymentError::UnknownCustomer(request.customer_id.clone()))?;

    // Every payment currently goes through the default rail; the preferences stored on
    // customer accounts are not honoured yet.
    let method = DEFAULT_METHOD;

    let fee_cents = compute_fee(amount_cents, method);
    let total_cents = amount_cents + fee_cents;
    Ok(Receipt {
        payment_id: ids.next_id(),
        customer_id: customer.id.clone(),
        method,
        amount_cents,
        fee_cents,
        total_cents,
        currency: CURRENCY.to_owned(),
        summary: receipt_summary(&customer.name, method, total_cents, fee_cents),
    })
}

/// The one-line receipt summary shown to humans.
pub fn receipt_summary(
    customer_name: &str,
    method: PaymentMethod,
    total_cents: u64,
    fee_cents: u64,
) -> String {
    format!(
        "charged {} {CURRENCY} to {customer_name} by {method} (fee {})",
        format_cents(total_cents),
        format_cents(fee_cents),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(customer_id: &str, amount_cents: i64) -> PaymentRequest {
        PaymentRequest {
            customer_id: customer_id.to_owned(),
            amount_cents,
        }
    }

    #[test]
    fn rounds_half_to_even() {
        assert_eq!(div_round_half_even(5, 10), 0);
        assert_eq!(div_round_half_even(15, 10), 2);
        assert_eq!(div_round_half_even(25, 10), 2);
        assert_eq!(div_round_half_even(26, 10), 3);
        assert_eq!(div_round_half_even(24, 10), 2);
        assert_eq!(div_round_half_even(0, 10), 0);
    }

    #[test]
    fn computes_fees_per_method() {
        // 1.4% of 10.00 is 0.14, plus 0.25 fixed.
        assert_eq!(compute_fee(1000, PaymentMethod::Card), 39);
        // 0.2% of 12.50 is 0.025: half, rounded to the even 2.
        assert_eq!(compute_fee(1250, PaymentMethod::BankTransfer), 2);
        // 1.9% of 1.00 is 0.019, rounded to 2, plus 0.10 fixed.
        assert_eq!(compute_fee(100, PaymentMethod::Wallet), 12);
    }

    #[test]
    fn formats_cents() {
        assert_eq!(format_cents(0), "0.00");
        assert_eq!(format_cents(7), "0.07");
        assert_eq!(format_cents(1234), "12.34");
        assert_eq!(format_cents(100_000), "1000.00");
    }

    #[test]
    fn validates_requests() {
        assert_eq!(validate(&request("cust-0001", 500)), Ok(500));
        assert!(matches!(
            validate(&request("", 500)),
            Err(PaymentError::InvalidCustomerId(_))
        ));
        assert!(matches!(
            validate(&request("cust 0001", 500)),
            Err(PaymentError::InvalidCustomerId(_))
        ));
        assert!(matches!(
            validate(&request(&"x".repeat(65), 500)),
            Err(PaymentError::InvalidCustomerId(_))
        ));
        assert_eq!(
            validate(&request("cust-0001", 0)),
            Err(PaymentError::NonPositiveAmount(0))
        );
        assert_eq!(
            validate(&request("cust-0001", -3)),
            Err(PaymentError::NonPositiveAmount(-3))
        );
    }

    #[test]
    fn parses_and_rejects_bodies() {
        let ok = parse_request(br#"{"customer_id":"cust-0001","amount_cents":1234}"#);
        assert_eq!(ok, Ok(request("cust-0001", 1234)));
        let bad = parse_request(b"{not json").unwrap_err();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        let missing = parse_request(br#"{"customer_id":"cust-0001"}"#).unwrap_err();
        assert_eq!(missing.code(), "malformed_body");
    }

    #[test]
    fn issues_sequential_ids() {
        let ids = PaymentIds::default();
        assert_eq!(ids.next_id(), "pay-00000001");
        assert_eq!(ids.next_id(), "pay-00000002");
    }

    #[test]
    fn processes_a_payment_for_every_seeded_customer() {
        let customers = CustomerStore::seeded();
        let ids = PaymentIds::default();
        for customer in customers.iter() {
            let receipt = process_payment(&customers, &ids, &request(&customer.id, 1000))
                .expect("seeded customers can pay");
            assert_eq!(receipt.customer_id, customer.id);
            assert_eq!(
                receipt.total_cents,
                receipt.amount_cents + receipt.fee_cents
            );
        }
    }

    #[test]
    fn unknown_customers_are_not_found() {
        let customers = CustomerStore::seeded();
        let err = process_payment(
            &customers,
            &PaymentIds::default(),
            &request("cust-9999", 100),
        )
        .unwrap_err();
        assert_eq!(err.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn receipt_summary_reads_well() {
        let summary = receipt_summary("Customer 0003", PaymentMethod::Card, 1259, 25);
        assert_eq!(
            summary,
            "charged 12.59 EUR to Customer 0003 by card (fee 0.25)"
        );
    }
}
