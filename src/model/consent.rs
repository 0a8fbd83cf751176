//! Consent records: per purpose and channel, with the evidence of how and when.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A channel a customer can be contacted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Email.
    Email,
    /// Text messages.
    Sms,
    /// Voice calls.
    Phone,
    /// Letters.
    Post,
    /// Any channel: for purposes such as profiling that are not about contacting.
    Any,
}

impl Channel {
    /// The channel's name (`email`, `sms`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Phone => "phone",
            Channel::Post => "post",
            Channel::Any => "any",
        }
    }

    /// The channel named `s`.
    pub fn parse(s: &str) -> Option<Channel> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "email" => Channel::Email,
            "sms" => Channel::Sms,
            "phone" => Channel::Phone,
            "post" => Channel::Post,
            "any" => Channel::Any,
            _ => return None,
        })
    }
}

/// Whether consent was given or taken back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentStatus {
    /// The customer agreed.
    Granted,
    /// The customer withdrew (or refused) consent.
    Withdrawn,
}

/// One consent event: a customer granted or withdrew consent for a purpose on a channel.
///
/// A customer keeps every event; the latest one for a purpose and channel is in force
/// ([`crate::Customer::consent`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Consent {
    /// What the data is used for (`marketing`, `profiling`, `transactional`, ...), case folded.
    pub purpose: String,
    /// The channel the consent covers.
    pub channel: Channel,
    /// Granted or withdrawn.
    pub status: ConsentStatus,
    /// When the customer gave or withdrew it.
    #[serde(with = "super::wire::timestamp")]
    pub at: DateTime<Utc>,
    /// How it was collected (`web_form`, `import`, `call`, ...).
    pub method: String,
    /// The system or person that recorded it, if known.
    pub source: Option<String>,
    /// The version of the policy text agreed to, if known.
    pub policy_version: Option<String>,
}

impl Consent {
    /// A consent event with no source or policy version.
    pub fn new(
        purpose: impl Into<String>,
        channel: Channel,
        status: ConsentStatus,
        at: DateTime<Utc>,
        method: impl Into<String>,
    ) -> Self {
        Consent {
            purpose: purpose.into().trim().to_lowercase(),
            channel,
            status,
            at,
            method: method.into(),
            source: None,
            policy_version: None,
        }
    }
}
