//! The activity timeline: what each customer did (purchases, interactions, tickets, notes), and
//! the metrics derived from it.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::attribute::AttributeValue;
use super::id::CustomerId;
use super::wire;
use crate::error::{Error, Result};
use crate::normalize::{self, Reason};

/// An activity's identity in one store, allocated on [`crate::WriteTxn::add_activity`] and never
/// reused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ActivityId(u64);

impl ActivityId {
    /// The id with this number.
    pub const fn from_u64(n: u64) -> Self {
        ActivityId(n)
    }

    /// The id as a number.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ActivityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for ActivityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActivityId({})", self.0)
    }
}

/// The active ISO 4217 currency codes, with the X codes for funds and metals (not the
/// testing and "no currency" codes).
const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD",
    "CAD", "CDF", "CHE", "CHF", "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUC", "CUP",
    "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP",
    "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS",
    "INR", "IQD", "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW",
    "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD",
    "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN",
    "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR",
    "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SLL",
    "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY",
    "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED", "VES",
    "VND", "VUV", "WST", "XAF", "XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XCD", "XCG", "XDR",
    "XOF", "XPD", "XPF", "XPT", "XSU", "XUA", "YER", "ZAR", "ZMW", "ZWG", "ZWL",
];

/// An ISO 4217 currency code, upper case.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Reads a currency code, ignoring case and surrounding space.
    ///
    /// ```
    /// use customerdb::Currency;
    /// assert_eq!(Currency::parse(" eur ")?.as_str(), "EUR");
    /// assert!(Currency::parse("EUX").is_err());
    /// # Ok::<(), customerdb::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`crate::ErrorKind::Invalid`] if it is not an ISO 4217 code.
    pub fn parse(s: &str) -> Result<Currency> {
        // Without allocating: stored records decode a currency per purchase.
        let code = <[u8; 3]>::try_from(s.trim().as_bytes())
            .ok()
            .map(|c| c.map(|b| b.to_ascii_uppercase()));
        match code {
            Some(code)
                if ISO_4217
                    .binary_search_by(|known| known.as_bytes().cmp(&code[..]))
                    .is_ok() =>
            {
                Ok(Currency(code))
            }
            _ => Err(Error::invalid("currency", s, Reason::CurrencyUnknown)),
        }
    }

    /// The code (`EUR`).
    pub fn as_str(&self) -> &str {
        // Only ASCII codes from ISO_4217 are ever built.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// Digits after the decimal point of the currency's minor unit (2 for EUR, 0 for JPY, 3 for
    /// KWD), which relate minor units to whole ones when converting.
    pub fn minor_digits(self) -> u32 {
        match self.as_str() {
            "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF"
            | "UGX" | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
            "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
            "CLF" | "UYW" => 4,
            _ => 2,
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Code;
        impl serde::de::Visitor<'_> for Code {
            type Value = Currency;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an ISO 4217 currency code")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Currency, E> {
                Currency::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(Code)
    }
}

/// A purchase (or a refund, with a negative amount).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Purchase {
    /// The amount in the currency's minor units (cents for EUR). Negative for a refund.
    pub amount: i64,
    /// The currency.
    pub currency: Currency,
    /// The order's reference in the shop or billing system.
    #[serde(default)]
    pub order_ref: Option<String>,
    /// What was bought, as free-form line items.
    #[serde(default)]
    pub items: Vec<LineItem>,
}

wire::serialize_skipping_empty!(Purchase { req amount, req currency, opt order_ref, opt items });

/// One line of a purchase.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LineItem {
    /// The product's code, if it has one.
    #[serde(default)]
    pub sku: Option<String>,
    /// What it is.
    pub name: String,
    /// How many.
    pub quantity: i64,
    /// The line's amount in the purchase currency's minor units, if known.
    #[serde(default)]
    pub amount: Option<i64>,
}

wire::serialize_skipping_empty!(LineItem { opt sku, req name, req quantity, opt amount });

/// How an interaction took place.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InteractionChannel {
    /// An email.
    Email,
    /// A phone call.
    Call,
    /// A meeting, in person or online.
    Meeting,
    /// A chat conversation.
    Chat,
    /// A visit to the website.
    WebVisit,
    /// A text message.
    Sms,
    /// Anything else, named.
    Other(String),
}

/// Who started an interaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The customer reached out.
    Inbound,
    /// The business reached out.
    Outbound,
}

/// A contact between the customer and the business.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Interaction {
    /// How.
    pub channel: InteractionChannel,
    /// Who started it.
    pub direction: Direction,
    /// What it was about.
    #[serde(default)]
    pub subject: Option<String>,
}

wire::serialize_skipping_empty!(Interaction { req channel, req direction, opt subject });

/// A support ticket's state after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketStatus {
    /// Opened or reopened, waiting on the business.
    Open,
    /// Waiting on the customer or a third party.
    Pending,
    /// Solved or closed.
    Closed,
}

/// An event on a support ticket: opened, updated or closed. The ticket's latest event (by time,
/// then by activity id) gives its status.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TicketEvent {
    /// The ticket's reference in the help desk.
    pub ticket: String,
    /// Its status after this event.
    pub status: TicketStatus,
    /// What the ticket is about.
    #[serde(default)]
    pub subject: Option<String>,
}

wire::serialize_skipping_empty!(TicketEvent { req ticket, req status, opt subject });

/// What kind of thing happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ActivityKind {
    /// A purchase or refund.
    Purchase(Purchase),
    /// An email, call, meeting, chat or visit.
    Interaction(Interaction),
    /// A support ticket event.
    Ticket(TicketEvent),
    /// A note someone wrote about the customer.
    Note {
        /// The note.
        text: String,
    },
    /// A kind the host names itself (`webinar_attended`, `trial_started`).
    Custom {
        /// The kind's name.
        name: String,
    },
}

/// The kinds of activity, for filtering a timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityType {
    /// [`ActivityKind::Purchase`].
    Purchase,
    /// [`ActivityKind::Interaction`].
    Interaction,
    /// [`ActivityKind::Ticket`].
    Ticket,
    /// [`ActivityKind::Note`].
    Note,
    /// [`ActivityKind::Custom`].
    Custom,
}

impl ActivityType {
    /// Every type.
    pub const ALL: [ActivityType; 5] = [
        ActivityType::Purchase,
        ActivityType::Interaction,
        ActivityType::Ticket,
        ActivityType::Note,
        ActivityType::Custom,
    ];

    /// The type's name (`purchase`, `interaction`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityType::Purchase => "purchase",
            ActivityType::Interaction => "interaction",
            ActivityType::Ticket => "ticket",
            ActivityType::Note => "note",
            ActivityType::Custom => "custom",
        }
    }

    /// The type named `s`.
    pub fn parse(s: &str) -> Option<ActivityType> {
        let s = s.trim();
        ActivityType::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for ActivityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ActivityKind {
    /// The kind's type.
    pub fn activity_type(&self) -> ActivityType {
        match self {
            ActivityKind::Purchase(_) => ActivityType::Purchase,
            ActivityKind::Interaction(_) => ActivityType::Interaction,
            ActivityKind::Ticket(_) => ActivityType::Ticket,
            ActivityKind::Note { .. } => ActivityType::Note,
            ActivityKind::Custom { .. } => ActivityType::Custom,
        }
    }
}

/// Something a customer did or that happened with them, at a time the host gives.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use customerdb::{Activity, Currency, Direction, InteractionChannel};
/// let at = Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap();
/// let order = Activity::purchase(at, 4_999, Currency::parse("EUR")?)
///     .order_ref("A-1001")
///     .source("shop");
/// let call = Activity::interaction(at, InteractionChannel::Call, Direction::Inbound)
///     .subject("Where is my parcel?");
/// # let _ = (order, call);
/// # Ok::<(), customerdb::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Activity {
    /// When it happened.
    #[serde(with = "super::wire::timestamp")]
    pub at: DateTime<Utc>,
    /// What happened.
    pub kind: ActivityKind,
    /// Which system or person reported it (`shop`, `helpdesk`, `import:2026-05`).
    #[serde(default)]
    pub source: Option<String>,
    /// Anything else the host wants to keep with it.
    #[serde(default)]
    pub metadata: BTreeMap<String, AttributeValue>,
}

wire::serialize_skipping_empty!(Activity { ts at, req kind, opt source, opt metadata });

impl Activity {
    /// An activity of `kind` at `at`.
    pub fn new(at: DateTime<Utc>, kind: ActivityKind) -> Activity {
        Activity {
            at,
            kind,
            source: None,
            metadata: BTreeMap::new(),
        }
    }

    /// A purchase of `amount` minor units of `currency` (negative for a refund).
    pub fn purchase(at: DateTime<Utc>, amount: i64, currency: Currency) -> Activity {
        Activity::new(
            at,
            ActivityKind::Purchase(Purchase {
                amount,
                currency,
                order_ref: None,
                items: Vec::new(),
            }),
        )
    }

    /// An interaction on `channel`.
    pub fn interaction(
        at: DateTime<Utc>,
        channel: InteractionChannel,
        direction: Direction,
    ) -> Activity {
        Activity::new(
            at,
            ActivityKind::Interaction(Interaction {
                channel,
                direction,
                subject: None,
            }),
        )
    }

    /// An event on support ticket `ticket`, leaving it in `status`.
    pub fn ticket(at: DateTime<Utc>, ticket: impl Into<String>, status: TicketStatus) -> Activity {
        Activity::new(
            at,
            ActivityKind::Ticket(TicketEvent {
                ticket: ticket.into(),
                status,
                subject: None,
            }),
        )
    }

    /// A note.
    pub fn note(at: DateTime<Utc>, text: impl Into<String>) -> Activity {
        Activity::new(at, ActivityKind::Note { text: text.into() })
    }

    /// An activity of a kind the host names.
    pub fn custom(at: DateTime<Utc>, name: impl Into<String>) -> Activity {
        Activity::new(at, ActivityKind::Custom { name: name.into() })
    }

    /// Sets the source.
    #[must_use]
    pub fn source(mut self, source: impl Into<String>) -> Activity {
        self.source = Some(source.into());
        self
    }

    /// Sets a metadata value.
    #[must_use]
    pub fn meta(mut self, key: impl Into<String>, value: AttributeValue) -> Activity {
        self.metadata.insert(key.into(), value);
        self
    }

    /// Sets a purchase's order reference (ignored for other kinds).
    #[must_use]
    pub fn order_ref(mut self, order_ref: impl Into<String>) -> Activity {
        if let ActivityKind::Purchase(p) = &mut self.kind {
            p.order_ref = Some(order_ref.into());
        }
        self
    }

    /// Adds a line item to a purchase (ignored for other kinds).
    #[must_use]
    pub fn item(mut self, item: LineItem) -> Activity {
        if let ActivityKind::Purchase(p) = &mut self.kind {
            p.items.push(item);
        }
        self
    }

    /// Sets an interaction's or a ticket's subject (ignored for other kinds).
    #[must_use]
    pub fn subject(mut self, subject: impl Into<String>) -> Activity {
        match &mut self.kind {
            ActivityKind::Interaction(i) => i.subject = Some(subject.into()),
            ActivityKind::Ticket(t) => t.subject = Some(subject.into()),
            _ => {}
        }
        self
    }

    /// The activity's type.
    pub fn activity_type(&self) -> ActivityType {
        self.kind.activity_type()
    }

    /// Checks and cleans the texts the host supplied, as the store does before writing.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Invalid`] naming the field (`activity.order_ref`,
    /// `activity.metadata.x`) for a text that is too long or holds control characters, an
    /// empty required text, or a bad metadata key.
    pub(crate) fn standardise(mut self) -> Result<Activity> {
        fn required(field: &str, s: &mut String) -> Result<()> {
            let cleaned = normalize::optional_text(Some(s))
                .map_err(|r| Error::invalid(field, s.as_str(), r))?
                .ok_or_else(|| Error::invalid(field, s.as_str(), Reason::Empty))?;
            *s = cleaned;
            Ok(())
        }
        fn optional(field: &str, s: &mut Option<String>) -> Result<()> {
            *s = normalize::optional_text(s.as_deref())
                .map_err(|r| Error::invalid(field, s.as_deref().unwrap_or(""), r))?;
            Ok(())
        }
        optional("activity.source", &mut self.source)?;
        match &mut self.kind {
            ActivityKind::Purchase(p) => {
                optional("activity.order_ref", &mut p.order_ref)?;
                for (i, item) in p.items.iter_mut().enumerate() {
                    required(&format!("activity.items[{i}].name"), &mut item.name)?;
                    optional(&format!("activity.items[{i}].sku"), &mut item.sku)?;
                }
            }
            ActivityKind::Interaction(i) => {
                optional("activity.subject", &mut i.subject)?;
                if let InteractionChannel::Other(name) = &mut i.channel {
                    required("activity.channel", name)?;
                }
            }
            ActivityKind::Ticket(t) => {
                required("activity.ticket", &mut t.ticket)?;
                optional("activity.subject", &mut t.subject)?;
            }
            ActivityKind::Note { text } => {
                if text.len() > MAX_NOTE_LEN {
                    return Err(Error::invalid(
                        "activity.text",
                        text.as_str(),
                        Reason::TooLong { max: MAX_NOTE_LEN },
                    ));
                }
                normalize::check_text(text, MAX_NOTE_LEN)
                    .map_err(|r| Error::invalid("activity.text", text.as_str(), r))?;
                if text.trim().is_empty() {
                    return Err(Error::invalid(
                        "activity.text",
                        text.as_str(),
                        Reason::Empty,
                    ));
                }
            }
            ActivityKind::Custom { name } => required("activity.name", name)?,
        }
        for key in self.metadata.keys() {
            if !super::attribute::is_valid_name(key) {
                return Err(Error::invalid(
                    format!("activity.metadata.{key}"),
                    key.as_str(),
                    Reason::Malformed,
                ));
            }
        }
        Ok(self)
    }
}

/// The longest note accepted, in bytes (other texts allow [`crate::normalize::MAX_TEXT_LEN`]).
pub const MAX_NOTE_LEN: usize = 64 * 1024;

/// An activity as stored: its id, whose it is, and when it was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityRecord {
    /// The id the store allocated.
    pub id: ActivityId,
    /// The customer it belongs to.
    pub customer: CustomerId,
    /// When it was written to the store (last corrected), by the store's clock.
    #[serde(with = "super::wire::timestamp")]
    pub recorded_at: DateTime<Utc>,
    /// The activity.
    pub activity: Activity,
}

/// A customer's metrics, derived from its timeline and kept in the same transaction as every
/// activity that changes them. Customers without activities have the default: all zero.
///
/// Purchases with a negative amount are refunds: they reduce spend but are not orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    /// Purchases with an amount of zero or more.
    pub order_count: u64,
    /// Net spend per currency, in minor units.
    pub spend: BTreeMap<Currency, i64>,
    /// Net spend in the store's base currency, in its minor units: every currency converted at
    /// the store's rates ([`crate::StoreBuilder::exchange_rate`]). Without a base currency it is
    /// the spend when all of it is in one currency. `None` when it cannot be computed (a
    /// currency without a rate, or several currencies and no base). Zero with no purchases.
    pub total_spend: Option<i64>,
    /// The first purchase (refunds excluded).
    #[serde(with = "super::wire::opt_timestamp")]
    pub first_purchase: Option<DateTime<Utc>>,
    /// The latest purchase (refunds excluded): the recency of RFM.
    #[serde(with = "super::wire::opt_timestamp")]
    pub last_purchase: Option<DateTime<Utc>>,
    /// The latest interaction (email, call, meeting, chat, visit): the last contact.
    #[serde(with = "super::wire::opt_timestamp")]
    pub last_interaction: Option<DateTime<Utc>>,
    /// Tickets whose latest event leaves them open or pending.
    pub open_tickets: u64,
    /// How many activities the customer has.
    pub activity_count: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            order_count: 0,
            spend: BTreeMap::new(),
            total_spend: Some(0),
            first_purchase: None,
            last_purchase: None,
            last_interaction: None,
            open_tickets: 0,
            activity_count: 0,
        }
    }
}

/// Recency, frequency and monetary value: the inputs of RFM scoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfm {
    /// Whole days since the last purchase (`None`: never bought).
    pub recency_days: Option<i64>,
    /// Orders.
    pub frequency: u64,
    /// Total spend in the base currency's minor units, if known.
    pub monetary: Option<i64>,
}

impl Metrics {
    /// The RFM inputs as of `now`.
    pub fn rfm(&self, now: DateTime<Utc>) -> Rfm {
        Rfm {
            recency_days: self.last_purchase.map(|t| (now - t).num_days()),
            frequency: self.order_count,
            monetary: self.total_spend,
        }
    }
}

/// How spend in several currencies adds up to one total.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Rates {
    pub(crate) base: Option<Currency>,
    /// Whole units of the base currency per whole unit of each other currency.
    pub(crate) rates: BTreeMap<Currency, Decimal>,
}

impl Rates {
    /// The total of `spend` in the base currency's minor units (see [`Metrics::total_spend`]).
    pub(crate) fn total(&self, spend: &BTreeMap<Currency, i64>) -> Option<i64> {
        let Some(base) = self.base else {
            return match spend.len() {
                0 => Some(0),
                1 => spend.values().next().copied(),
                _ => None,
            };
        };
        let mut total = Decimal::ZERO;
        for (&cur, &minor) in spend {
            let rate = if cur == base {
                Decimal::ONE
            } else {
                *self.rates.get(&cur)?
            };
            let whole = Decimal::from(minor).checked_div(pow10(cur.minor_digits()))?;
            let converted = whole
                .checked_mul(rate)?
                .checked_mul(pow10(base.minor_digits()))?;
            total = total.checked_add(converted)?;
        }
        i64::try_from(total.round()).ok()
    }
}

fn pow10(n: u32) -> Decimal {
    Decimal::from(10u64.pow(n))
}

/// The metrics of a customer and what is needed to keep them incrementally.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MetricState {
    pub(crate) metrics: Metrics,
    /// Each ticket's latest event: (time in microseconds, activity id, status).
    pub(crate) tickets: BTreeMap<String, (i64, u64, TicketStatus)>,
}

impl MetricState {
    /// Adds one activity's contribution.
    pub(crate) fn add(&mut self, id: ActivityId, a: &Activity, rates: &Rates) {
        let m = &mut self.metrics;
        m.activity_count += 1;
        match &a.kind {
            ActivityKind::Purchase(p) => {
                let spent = m.spend.entry(p.currency).or_insert(0);
                *spent = spent.saturating_add(p.amount);
                if *spent == 0 && p.amount != 0 {
                    m.spend.remove(&p.currency);
                }
                if p.amount >= 0 {
                    m.order_count += 1;
                    m.first_purchase = Some(m.first_purchase.map_or(a.at, |t| t.min(a.at)));
                    m.last_purchase = Some(m.last_purchase.map_or(a.at, |t| t.max(a.at)));
                }
                m.total_spend = rates.total(&m.spend);
            }
            ActivityKind::Interaction(_) => {
                m.last_interaction = Some(m.last_interaction.map_or(a.at, |t| t.max(a.at)));
            }
            ActivityKind::Ticket(t) => {
                let event = (a.at.timestamp_micros(), id.as_u64(), t.status);
                let slot = self.tickets.entry(t.ticket.clone()).or_insert(event);
                if (event.0, event.1) >= (slot.0, slot.1) {
                    *slot = event;
                }
                m.open_tickets = self
                    .tickets
                    .values()
                    .filter(|e| e.2 != TicketStatus::Closed)
                    .count() as u64;
            }
            ActivityKind::Note { .. } | ActivityKind::Custom { .. } => {}
        }
    }

    /// The state of a whole timeline.
    pub(crate) fn of<'a>(
        activities: impl IntoIterator<Item = (ActivityId, &'a Activity)>,
        rates: &Rates,
    ) -> MetricState {
        let mut s = MetricState::default();
        for (id, a) in activities {
            s.add(id, a, rates);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, day, 12, 0, 0).unwrap()
    }

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    #[test]
    fn readable_form_leaves_out_empty_fields_and_both_forms_round_trip() {
        let bare = Activity::purchase(t(1), 4_999, eur());
        let json = serde_json::to_string(&bare).unwrap();
        assert_eq!(
            json,
            r#"{"at":"2026-01-01T12:00:00Z","kind":{"purchase":{"amount":4999,"currency":"EUR"}}}"#
        );
        let mut full = Activity::purchase(t(2), -100, eur())
            .order_ref("A-1")
            .source("shop");
        if let ActivityKind::Purchase(p) = &mut full.kind {
            p.items.push(LineItem {
                sku: None,
                name: "Tea".into(),
                quantity: 2,
                amount: Some(-100),
            });
        }
        full.metadata
            .insert("campaign".into(), AttributeValue::Text("spring".into()));
        let calls = [
            Activity::interaction(t(3), InteractionChannel::Call, Direction::Inbound),
            Activity::ticket(t(4), "T-9", TicketStatus::Open).subject("Broken"),
        ];
        for a in [bare, full].into_iter().chain(calls) {
            let json = serde_json::to_string(&a).unwrap();
            assert!(!json.contains("null") && !json.contains("[]"), "{json}");
            assert_eq!(serde_json::from_str::<Activity>(&json).unwrap(), a);
            let bytes = postcard::to_allocvec(&a).unwrap();
            assert_eq!(postcard::from_bytes::<Activity>(&bytes).unwrap(), a);
        }
    }

    #[test]
    fn currency_list_is_sorted_and_codes_parse() {
        assert!(ISO_4217.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(Currency::parse("jpy").unwrap().minor_digits(), 0);
        assert_eq!(Currency::parse("KWD").unwrap().minor_digits(), 3);
        assert!(Currency::parse("EURO").is_err());
        assert!(Currency::parse("").is_err());
    }

    #[test]
    fn metrics_count_orders_refunds_and_tickets() {
        let acts = [
            Activity::purchase(t(3), 1000, eur()),
            Activity::purchase(t(1), 500, eur()),
            Activity::purchase(t(5), -200, eur()),
            Activity::interaction(t(4), InteractionChannel::Call, Direction::Inbound),
            Activity::ticket(t(2), "T1", TicketStatus::Open),
            Activity::ticket(t(6), "T1", TicketStatus::Closed),
            Activity::ticket(t(6), "T2", TicketStatus::Pending),
        ];
        let s = MetricState::of(
            acts.iter()
                .enumerate()
                .map(|(i, a)| (ActivityId::from_u64(i as u64 + 1), a)),
            &Rates::default(),
        );
        let m = s.metrics;
        assert_eq!(m.order_count, 2);
        assert_eq!(m.spend.get(&eur()), Some(&1300));
        assert_eq!(m.total_spend, Some(1300));
        assert_eq!(m.first_purchase, Some(t(1)));
        assert_eq!(m.last_purchase, Some(t(3)));
        assert_eq!(m.last_interaction, Some(t(4)));
        assert_eq!(m.open_tickets, 1);
        assert_eq!(m.activity_count, 7);
        assert_eq!(m.rfm(t(10)).recency_days, Some(7));
    }

    #[test]
    fn metrics_do_not_depend_on_the_order_activities_arrive_in() {
        let acts = [
            Activity::ticket(t(6), "T1", TicketStatus::Closed),
            Activity::ticket(t(2), "T1", TicketStatus::Open),
        ];
        let forward = MetricState::of(
            [(ActivityId(1), &acts[0]), (ActivityId(2), &acts[1])],
            &Rates::default(),
        );
        let backward = MetricState::of(
            [(ActivityId(2), &acts[1]), (ActivityId(1), &acts[0])],
            &Rates::default(),
        );
        assert_eq!(forward, backward);
        assert_eq!(forward.metrics.open_tickets, 0);
    }

    #[test]
    fn totals_convert_at_rates_and_respect_minor_digits() {
        let usd = Currency::parse("USD").unwrap();
        let jpy = Currency::parse("JPY").unwrap();
        let mut spend = BTreeMap::new();
        spend.insert(eur(), 1000); // 10.00 EUR
        spend.insert(jpy, 1500); // 1500 JPY
        assert_eq!(Rates::default().total(&spend), None);
        let mut rates = Rates {
            base: Some(eur()),
            rates: BTreeMap::new(),
        };
        assert_eq!(rates.total(&spend), None, "no JPY rate");
        rates.rates.insert(jpy, Decimal::new(6, 3)); // 1 JPY = 0.006 EUR
        assert_eq!(rates.total(&spend), Some(1000 + 900));
        spend.insert(usd, 1);
        assert_eq!(rates.total(&spend), None);
    }

    #[test]
    fn standardise_names_the_field() {
        let a = Activity::purchase(t(1), 1, eur()).order_ref("bad\u{0}ref");
        let err = a.standardise().unwrap_err();
        assert!(
            matches!(err.kind(), crate::ErrorKind::Invalid { field, .. } if field == "activity.order_ref")
        );
        let a = Activity::ticket(t(1), "  ", TicketStatus::Open);
        assert!(a.standardise().is_err());
        let a = Activity::note(t(1), "  hello  ").source("  crm ");
        assert_eq!(a.standardise().unwrap().source.as_deref(), Some("crm"));
    }
}
