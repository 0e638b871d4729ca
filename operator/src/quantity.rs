//! Kubernetes resource quantities (`100m`, `1.5Gi`, `2e3`) as numbers, for sizing the quota.

/// Parses a quantity into its value (cores for CPU, bytes for memory and storage).
/// Returns `None` for a string Kubernetes would not accept.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        "Ei" => 1024.0_f64.powi(6),
        exponent if exponent.starts_with(['e', 'E']) => {
            10f64.powi(exponent[1..].parse::<i32>().ok()?)
        }
        _ => return None,
    };
    Some(number * factor)
}

/// Formats cores as whole millicores, rounded up: `0.9` → `900m`.
pub fn format_cpu(cores: f64) -> String {
    format!("{}m", (cores * 1000.0 - 1e-6).ceil().max(0.0) as u64)
}

/// Formats bytes as whole mebibytes, rounded up: `1073741824` → `1024Mi`.
pub fn format_memory(bytes: f64) -> String {
    format!(
        "{}Mi",
        (bytes / (1024.0 * 1024.0) - 1e-9).ceil().max(0.0) as u64
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_binary_and_milli_suffixes() {
        assert_eq!(parse_quantity("100m"), Some(0.1));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("128Mi"), Some(134_217_728.0));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        assert_eq!(
            parse_quantity("1.5Gi"),
            Some(1.5 * 1024.0 * 1024.0 * 1024.0)
        );
        assert_eq!(parse_quantity("2e3"), Some(2000.0));
        assert_eq!(parse_quantity("1Qi"), None);
        assert_eq!(parse_quantity("abc"), None);
    }

    #[test]
    fn formats_round_up() {
        assert_eq!(format_cpu(0.9), "900m");
        assert_eq!(format_cpu(0.1 + 0.2), "300m");
        assert_eq!(format_memory(134_217_728.0 * 3.0), "384Mi");
        assert_eq!(format_memory(134_217_729.0), "129Mi");
    }
}
