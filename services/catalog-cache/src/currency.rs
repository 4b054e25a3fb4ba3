//! The currencies a price may be in.

/// The alphabetic codes of ISO 4217 list one for the currencies in circulation (2026), sorted.
///
/// Left out: fund codes (`BOV`, `CLF`, `USN`…), precious metals (`XAU`…), special drawing
/// rights and settlement units (`XDR`, `XSU`, `XUA`, `XBA`–`XBD`), and the codes for testing
/// and "no currency" (`XTS`, `XXX`): nothing in a shop is priced in them. Withdrawn codes are
/// gone (`HRK`, `BGN`, `SLL`, `ZWL`, `ANG`…). ISO publishes amendments a few times a year; an
/// added currency is an addition here, a withdrawn one a removal once no product uses it.
const CURRENCIES: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BHD",
    "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF",
    "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN",
    "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD",
    "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD", "JPY", "KES",
    "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL",
    "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN",
    "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP",
    "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK",
    "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT",
    "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS", "VED", "VES",
    "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

/// Whether `code` is one of [`CURRENCIES`]: exactly, so `eur` is not.
pub fn is_iso_4217(code: &str) -> bool {
    CURRENCIES.binary_search(&code).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_unique_and_three_uppercase_letters() {
        // `binary_search` relies on the order; strict order also rules out duplicates.
        assert!(CURRENCIES.is_sorted_by(|a, b| a < b));
        for code in CURRENCIES {
            assert!(
                code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()),
                "{code}"
            );
        }
    }

    #[test]
    fn only_listed_codes_are_accepted() {
        for code in ["EUR", "USD", "JPY", "CHF", "AED", "ZWG"] {
            assert!(is_iso_4217(code), "{code}");
        }
        for code in [
            "eur", "Eur", "EU", "EURO", "", " EUR", "XXX", "XAU", "HRK", "ABC",
        ] {
            assert!(!is_iso_4217(code), "{code:?}");
        }
    }
}
