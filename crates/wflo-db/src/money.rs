//! Exact money: `Decimal` US dollars in the API, integer nano-USD (10⁻⁹ USD) in the database.

use crate::{Error, Result};
use rust_decimal::{Decimal, RoundingStrategy};

/// Nano-USD in one USD.
pub const NANOS_PER_USD: i64 = 1_000_000_000;

/// Converts dollars to nano-USD, rounding half away from zero at the ninth decimal.
/// Negative amounts and amounts beyond about 9.2 billion USD are refused.
pub fn usd_to_nanos(usd: Decimal) -> Result<i64> {
    if usd.is_sign_negative() && !usd.is_zero() {
        return Err(Error::Invalid {
            entity: "amount",
            detail: format!("{usd} USD is negative; amounts are never negative"),
        });
    }
    let nanos = (usd * Decimal::from(NANOS_PER_USD))
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
    i64::try_from(nanos).map_err(|_| Error::Invalid {
        entity: "amount",
        detail: format!("{usd} USD does not fit in 64-bit nano-USD"),
    })
}

/// Converts nano-USD to dollars, exactly.
pub fn nanos_to_usd(nanos: i64) -> Decimal {
    Decimal::new(nanos, 9).normalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn round_trips_exactly() {
        for s in [
            "0",
            "0.006",
            "0.018",
            "0.0105",
            "0.0025",
            "1.000000001",
            "123.456789012",
        ] {
            let d = Decimal::from_str(s).unwrap();
            let n = usd_to_nanos(d).unwrap();
            let back = nanos_to_usd(n);
            if d.scale() <= 9 {
                assert_eq!(back, d.normalize(), "{s}");
            }
        }
        assert_eq!(
            usd_to_nanos(Decimal::from_str("0.006").unwrap()).unwrap(),
            6_000_000
        );
    }

    #[test]
    fn rounds_below_a_nano() {
        // 0.15 USD / 1M tokens * 1 token = 0.00000015 USD = 150 nanos; 0.5 nanos rounds up.
        assert_eq!(
            usd_to_nanos(Decimal::from_str("0.0000000005").unwrap()).unwrap(),
            1
        );
        assert_eq!(
            usd_to_nanos(Decimal::from_str("0.0000000004").unwrap()).unwrap(),
            0
        );
    }

    #[test]
    fn refuses_negative_and_huge() {
        assert!(usd_to_nanos(Decimal::from_str("-0.01").unwrap()).is_err());
        assert!(usd_to_nanos(Decimal::from_str("10000000000").unwrap()).is_err());
    }
}
