use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A customer's identity in one store, allocated by the store on insert and never reused.
///
/// Ids increase in insertion order. A merged-away customer's id stays reserved.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CustomerId(u64);

impl CustomerId {
    /// The id with this number, e.g. one printed earlier or kept by the host.
    ///
    /// Whether a customer has this id is for the store to say ([`crate::Read::get`]).
    pub const fn from_u64(n: u64) -> Self {
        CustomerId(n)
    }

    /// The id as a number.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CustomerId({})", self.0)
    }
}

impl FromStr for CustomerId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().parse().map(CustomerId)
    }
}
