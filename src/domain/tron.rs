//! TRON payout addresses: base58check over 21 bytes whose version byte is 0x41, which is
//! why every valid address starts with `T`.

/// Why an address was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum TronAddressError {
    NotBase58Check,
    WrongLength(usize),
    WrongVersion(u8),
}

impl std::fmt::Display for TronAddressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotBase58Check => write!(f, "not valid base58check (bad character or checksum)"),
            Self::WrongLength(n) => write!(f, "decodes to {n} bytes, expected 21"),
            Self::WrongVersion(v) => write!(f, "version byte is 0x{v:02x}, expected 0x41"),
        }
    }
}

/// Checks a TRON address (`T...`, base58check, version byte 0x41).
pub fn validate_tron_address(address: &str) -> Result<(), TronAddressError> {
    if !address.starts_with('T') || address.len() > 64 {
        return Err(TronAddressError::NotBase58Check);
    }
    let payload = bs58::decode(address)
        .with_check(None)
        .into_vec()
        .map_err(|_| TronAddressError::NotBase58Check)?;
    if payload.len() != 21 {
        return Err(TronAddressError::WrongLength(payload.len()));
    }
    if payload[0] != 0x41 {
        return Err(TronAddressError::WrongVersion(payload[0]));
    }
    Ok(())
}

/// Encodes a 20-byte account hash as a TRON address (used by tests and tools).
pub fn encode_tron_address(account: &[u8; 20]) -> String {
    let mut payload = Vec::with_capacity(21);
    payload.push(0x41);
    payload.extend_from_slice(account);
    bs58::encode(payload).with_check().into_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The USDT (TRC-20) contract address, a well-known valid address.
    const KNOWN_GOOD: &str = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t";

    #[test]
    fn accepts_known_valid_address() {
        assert_eq!(validate_tron_address(KNOWN_GOOD), Ok(()));
        assert_eq!(
            validate_tron_address(&encode_tron_address(&[7; 20])),
            Ok(())
        );
    }

    #[test]
    fn rejects_a_changed_character_by_checksum() {
        let mut bad = KNOWN_GOOD.to_string();
        bad.replace_range(5..6, "k");
        assert_eq!(
            validate_tron_address(&bad),
            Err(TronAddressError::NotBase58Check)
        );
    }

    #[test]
    fn rejects_other_version_bytes_and_shapes() {
        let mut payload = vec![0x00];
        payload.extend_from_slice(&[1; 20]);
        let bitcoin_like = bs58::encode(payload).with_check().into_string();
        assert!(validate_tron_address(&bitcoin_like).is_err());
        assert!(validate_tron_address("").is_err());
        assert!(validate_tron_address("T0OIl").is_err());
    }
}
