//! SQL Server log sequence numbers: `binary(10)` values (VLF sequence, log block, slot; big
//! endian), compared bytewise. Written as `0x` + 20 hex digits, the way SSMS shows them.

use crate::CdcError;
use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub [u8; 10]);

impl Lsn {
    pub const ZERO: Lsn = Lsn([0; 10]);
    pub const MAX: Lsn = Lsn([0xff; 10]);

    /// From the raw `binary(10)` bytes; anything but 10 bytes is an error.
    pub fn from_bytes(b: &[u8]) -> Result<Lsn, CdcError> {
        let arr: [u8; 10] = b.try_into().map_err(|_| {
            CdcError::Source(format!("an LSN is 10 bytes, the server sent {}", b.len()))
        })?;
        Ok(Lsn(arr))
    }

    /// Parses `0x0000002a000001f00003` (the `0x` is optional; case-insensitive).
    pub fn parse(s: &str) -> Result<Lsn, CdcError> {
        let h = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        if h.len() != 20 {
            return Err(CdcError::Source(format!(
                "bad LSN `{s}`: expected 20 hex digits"
            )));
        }
        let bytes = hex::decode(h).map_err(|e| CdcError::Source(format!("bad LSN `{s}`: {e}")))?;
        Lsn::from_bytes(&bytes)
    }

    pub fn to_u128(self) -> u128 {
        let mut b = [0u8; 16];
        b[6..].copy_from_slice(&self.0);
        u128::from_be_bytes(b)
    }

    /// The low 80 bits of `v`.
    pub fn from_u128(v: u128) -> Lsn {
        let b = v.to_be_bytes();
        let mut out = [0u8; 10];
        out.copy_from_slice(&b[6..]);
        Lsn(out)
    }

    /// What `sys.fn_cdc_increment_lsn` returns: the next binary value (saturating).
    pub fn increment(self) -> Lsn {
        if self == Lsn::MAX {
            self
        } else {
            Lsn::from_u128(self.to_u128() + 1)
        }
    }

    /// What `sys.fn_cdc_decrement_lsn` returns (saturating at zero).
    pub fn decrement(self) -> Lsn {
        Lsn::from_u128(self.to_u128().saturating_sub(1))
    }

    pub fn is_zero(self) -> bool {
        self == Lsn::ZERO
    }

    /// `0x` + 20 upper-case hex digits.
    pub fn hex(self) -> String {
        format!("0x{}", hex::encode_upper(self.0))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lsn({})", self.hex())
    }
}
