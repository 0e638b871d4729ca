//! Kubernetes resource quantities (`100m`, `512Mi`, `1.5`, `1e3`): exact parsing, addition,
//! comparison and the canonical text form the API server prints.
//!
//! Follows the documented grammar of `resource.Quantity`
//! (<https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/quantity/>):
//! a signed decimal number, then a binary SI suffix (`Ki` … `Ei`), a decimal SI suffix
//! (`n`, `u`, `m`, ``, `k`, `M`, `G`, `T`, `P`, `E`) or a decimal exponent (`e3`, `E-2`).
//! Values are kept exactly in nano-units; precision below one nano-unit is rounded up, as the
//! API server does.

use std::cmp::Ordering;
use std::fmt;

const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// How a quantity is written, which decides its canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantityFormat {
    /// Powers of 1024 (`Ki`, `Mi`, …).
    BinarySi,
    /// Powers of 1000 (`m`, `k`, `M`, …) or no suffix.
    DecimalSi,
    /// A decimal exponent (`1e3`).
    DecimalExponent,
}

/// An exact quantity in nano-units with the format it was written in.
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    nanos: i128,
    format: QuantityFormat,
}

/// Why a quantity string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantityError {
    /// The text that was given.
    pub text: String,
}

impl fmt::Display for QuantityError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "quantities must match the regular expression \
             '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$', got {:?}",
            self.text
        )
    }
}

impl std::error::Error for QuantityError {}

impl Quantity {
    /// Zero, in decimal format.
    pub const ZERO: Quantity = Quantity {
        nanos: 0,
        format: QuantityFormat::DecimalSi,
    };

    /// A whole number of units (e.g. a pod count).
    pub fn from_units(units: i64) -> Self {
        Quantity {
            nanos: i128::from(units) * NANOS_PER_UNIT,
            format: QuantityFormat::DecimalSi,
        }
    }

    /// Parses the text form.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let error = || QuantityError {
            text: text.to_owned(),
        };
        let trimmed = text.trim();
        let (negative, rest) = match trimmed.as_bytes().first() {
            Some(b'-') => (true, &trimmed[1..]),
            Some(b'+') => (false, &trimmed[1..]),
            _ => (false, trimmed),
        };
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_end);
        if number.is_empty() || number.matches('.').count() > 1 || number == "." {
            return Err(error());
        }
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let digits: String = format!("{whole}{fraction}");
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| error())?
        };
        let fraction_digits = u32::try_from(fraction.len()).map_err(|_| error())?;

        // The multiplier as (numerator, base, exponent): value = mantissa * base^exponent / 10^fraction.
        let (format, base, exponent): (QuantityFormat, i128, i32) = match suffix {
            "Ki" => (QuantityFormat::BinarySi, 1024, 1),
            "Mi" => (QuantityFormat::BinarySi, 1024, 2),
            "Gi" => (QuantityFormat::BinarySi, 1024, 3),
            "Ti" => (QuantityFormat::BinarySi, 1024, 4),
            "Pi" => (QuantityFormat::BinarySi, 1024, 5),
            "Ei" => (QuantityFormat::BinarySi, 1024, 6),
            "n" => (QuantityFormat::DecimalSi, 10, -9),
            "u" => (QuantityFormat::DecimalSi, 10, -6),
            "m" => (QuantityFormat::DecimalSi, 10, -3),
            "" => (QuantityFormat::DecimalSi, 10, 0),
            "k" => (QuantityFormat::DecimalSi, 10, 3),
            "M" => (QuantityFormat::DecimalSi, 10, 6),
            "G" => (QuantityFormat::DecimalSi, 10, 9),
            "T" => (QuantityFormat::DecimalSi, 10, 12),
            "P" => (QuantityFormat::DecimalSi, 10, 15),
            "E" => (QuantityFormat::DecimalSi, 10, 18),
            other => {
                let exponent_text = other
                    .strip_prefix('e')
                    .or_else(|| other.strip_prefix('E'))
                    .ok_or_else(error)?;
                let exponent: i32 = exponent_text.parse().map_err(|_| error())?;
                if !(-30..=30).contains(&exponent) {
                    return Err(error());
                }
                (QuantityFormat::DecimalExponent, 10, exponent)
            }
        };

        // nanos = mantissa * base^exponent * 10^9 / 10^fraction_digits, rounded up.
        let mut numerator = mantissa.checked_mul(NANOS_PER_UNIT).ok_or_else(error)?;
        let mut denominator: i128 = 10_i128.checked_pow(fraction_digits).ok_or_else(error)?;
        let power = base
            .checked_pow(exponent.unsigned_abs())
            .ok_or_else(error)?;
        if exponent >= 0 {
            numerator = numerator.checked_mul(power).ok_or_else(error)?;
        } else {
            denominator = denominator.checked_mul(power).ok_or_else(error)?;
        }
        let mut nanos = numerator / denominator;
        if numerator % denominator != 0 {
            nanos += 1;
        }
        if negative {
            nanos = -nanos;
        }
        Ok(Quantity { nanos, format })
    }

    /// The sum, in the format of `self` (as `Quantity.Add` keeps the receiver's format).
    pub fn plus(self, other: Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos.saturating_add(other.nanos),
            format: self.format,
        }
    }

    /// The value in milli-units, rounded up (CPU is accounted in millicores).
    pub fn millis_ceil(self) -> i128 {
        let per_milli = NANOS_PER_UNIT / 1000;
        let whole = self.nanos / per_milli;
        if self.nanos % per_milli > 0 {
            whole + 1
        } else {
            whole
        }
    }

    /// Whether the value is zero.
    pub fn is_zero(self) -> bool {
        self.nanos == 0
    }

    /// The canonical text form, as the API server serialises a quantity.
    pub fn canonical(self) -> String {
        let negative = self.nanos < 0;
        let magnitude = self.nanos.unsigned_abs();
        let sign = if negative { "-" } else { "" };
        if magnitude == 0 {
            return "0".to_owned();
        }
        let units_per_nano = NANOS_PER_UNIT.unsigned_abs();
        if self.format == QuantityFormat::BinarySi && magnitude.is_multiple_of(units_per_nano) {
            let units = magnitude / units_per_nano;
            if units >= 1024 {
                let suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
                let mut value = units;
                let mut index = 0;
                while index + 1 < suffixes.len() && value.is_multiple_of(1024) {
                    value /= 1024;
                    index += 1;
                }
                return format!("{sign}{value}{}", suffixes[index]);
            }
        }
        // Decimal: the largest power of 1000 that keeps the mantissa whole.
        let mut value = magnitude;
        let mut exponent: i32 = -9;
        while exponent < 18 && value.is_multiple_of(1000) {
            value /= 1000;
            exponent += 3;
        }
        if self.format == QuantityFormat::DecimalExponent {
            return if exponent == 0 {
                format!("{sign}{value}")
            } else {
                format!("{sign}{value}e{exponent}")
            };
        }
        let suffix = match exponent {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            _ => "E",
        };
        format!("{sign}{value}{suffix}")
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.canonical())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> Quantity {
        Quantity::parse(text).expect(text)
    }

    #[test]
    fn decimal_and_binary_suffixes_parse_to_exact_values() {
        assert_eq!(q("100m").millis_ceil(), 100);
        assert_eq!(q("1").millis_ceil(), 1000);
        assert_eq!(q("1.5").millis_ceil(), 1500);
        assert_eq!(q("1Ki"), q("1024"));
        assert_eq!(q("1Gi"), q("1073741824"));
        assert_eq!(q("1e3"), q("1k"));
        assert_eq!(q("0.5Gi"), q("512Mi"));
    }

    #[test]
    fn canonical_form_matches_the_api_servers() {
        assert_eq!(q("2000m").canonical(), "2");
        assert_eq!(q("1500m").canonical(), "1500m");
        assert_eq!(q("1000").canonical(), "1k");
        assert_eq!(q("1536Mi").canonical(), "1536Mi");
        assert_eq!(q("2048Mi").canonical(), "2Gi");
        assert_eq!(q("0").canonical(), "0");
        assert_eq!(q("1e3").canonical(), "1e3");
        assert_eq!(q("100Mi").plus(q("100Mi")).canonical(), "200Mi");
        assert_eq!(q("500m").plus(q("500m")).canonical(), "1");
    }

    #[test]
    fn sub_nano_precision_rounds_up() {
        assert_eq!(q("0.1n"), q("1n"));
    }

    #[test]
    fn malformed_quantities_are_rejected_with_the_grammar() {
        for bad in ["", "abc", "1.2.3", "1Xi", "--1", "."] {
            let error = Quantity::parse(bad).expect_err(bad);
            assert!(error.to_string().contains("regular expression"), "{error}");
        }
    }
}
