//! Realistic synthetic customers for demos, tests and benchmarks.
//!
//! [`generate`] returns `n` customers for a seed; [`Generator`] yields the same stream lazily;
//! [`Duplicates`] wraps it with people entered more than once, with known answers, for measuring
//! duplicate detection. The output depends only on the seed: the generator is a SplitMix64 PRNG
//! driving integer-only sampling (no floating point, no `rand`, no hash-map iteration order), so a
//! seed gives the same customers on every machine and every run. Values are raw strings as a user
//! would type them (national or international phone formats, mixed-case emails now and then,
//! diacritics in names and places); every one passes customerdb's validation.
//!
//! # Distribution
//! - Countries weighted GB 22%, US 20%, DE 14%, FR 11%, ES 8%, IT 8%, NL 6%, IE 4%, AU 4%, CA 3%.
//! - About 2,150 given names with a Zipf-like skew (the most common ≈ 1.8%), shared by all
//!   countries; per country 30 real common family names ranked first, then about 2,000 names built
//!   from syllables (≈ 2,300 distinct family names in all, the most common ≈ 0.7%).
//! - 300 cities, 30 per country, Zipf-skewed within the country (the largest ≈ 16% of it); the
//!   postcode has the country's canonical shape and a prefix that belongs to the city.
//! - About 5% of customers share their phone with another customer: a household (same family
//!   name, address and phone, a different given name). Every other phone is unique. About 2% of
//!   phones belong to another country than the address and are written internationally.
//! - Emails are unique across the whole stream, even after lower-casing and removing dots from
//!   the local part. External ids are unique.
//! - 0 to 3 tags (30% none) from 30, 20 owners, 8 sources, birth dates uniform in 1940–2006,
//!   about 35% with an organization.
//!
//! Uniqueness of phones holds while no number pattern runs out (each has 10⁶ to 10⁸ numbers, so
//! several million customers); uniqueness of emails and external ids holds for up to 10⁹
//! customers. The generator remembers a fingerprint of each email (8 bytes a customer).
//!
//! # Data sources
//! Given names: the distinct names of `names.csv` in
//! [carltonnorthern/nicknames](https://github.com/carltonnorthern/nicknames), Apache-2.0
//! (`src/sample/given_names.txt`). Places, common surnames, street names, email providers and
//! phone number patterns: `src/sample/lists.tsv`, common public facts; each phone pattern was
//! checked valid against libphonenumber's metadata 9.0.33.
//!
//! # Example
//! ```
//! use customerdb::sample;
//!
//! let customers = sample::generate(42, 100);
//! assert_eq!(customers.len(), 100);
//! assert_eq!(customers, sample::generate(42, 100));
//! let builder = customers[0].to_builder();
//! # let _ = builder;
//! ```

use std::collections::{HashSet, VecDeque};
use std::sync::OnceLock;

use chrono::NaiveDate;

mod duplicates;
pub use duplicates::{Duplicates, SampleRecord};

const GIVEN_NAMES: &str = include_str!("sample/given_names.txt");
const LISTS: &str = include_str!("sample/lists.tsv");

/// Chance per mille that a customer joins an earlier customer's household (sharing its phone);
/// each such join makes two customers share, so the shared fraction is about twice this.
const HOUSEHOLD_PER_MILLE: u64 = 25;
/// How many recent single customers a new household member may join.
const HOUSEHOLD_WINDOW: usize = 64;
/// Days from the common era of 1940-01-01 and 2006-12-31, the birth date range.
const BIRTH_FIRST_DAY: i32 = 708_205;
const BIRTH_LAST_DAY: i32 = 732_676;
/// Multiplier of the bijections that spread sequence numbers over a power-of-ten range; odd
/// and not a multiple of 5, hence coprime with every power of ten.
const SPREAD_MULTIPLIER: u128 = 2_862_933_555_777_941_757;
const SPREAD_OFFSET: u128 = 1_442_695_040_888_963_407;

/// One synthetic customer, as raw strings a user might type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleCustomer {
    /// Given name, e.g. "Ada".
    pub given_name: String,
    /// Family name, possibly with a particle, apostrophe or diacritics ("van den Berg").
    pub family_name: String,
    /// Email address, plain ASCII dot-atom; unique in the stream.
    pub email: String,
    /// Phone number in a national ("020 7946 0123") or international ("+49 30 2123456") format.
    pub phone: String,
    /// ISO 3166-1 alpha-2 region of the phone number (usually the address country).
    pub phone_country: String,
    /// Street line with house number, in the country's usual order.
    pub street: String,
    /// City or town.
    pub locality: String,
    /// Postcode in the country's canonical shape.
    pub postcode: String,
    /// ISO 3166-1 alpha-2 country of the address.
    pub country: String,
    /// Date of birth, 1940-01-01 to 2006-12-31.
    pub birth_date: NaiveDate,
    /// Zero to three distinct tags.
    pub tags: Vec<String>,
    /// Lifecycle stage.
    pub stage: crate::Stage,
    /// Account owner handle, e.g. "ana".
    pub owner: String,
    /// Acquisition source, e.g. "web".
    pub source: String,
    /// External id as (system, id); unique in the stream.
    pub external_id: (String, String),
    /// Employer, for about a third of customers.
    pub organization: Option<String>,
    /// Job title, mostly for customers with an organization.
    pub job_title: Option<String>,
}

impl SampleCustomer {
    /// A [`CustomerBuilder`](crate::CustomerBuilder) holding every field of this customer, with
    /// [`phone_country`](Self::phone_country) as the phone's region.
    pub fn to_builder(&self) -> crate::CustomerBuilder {
        self.builder_of(true)
    }

    /// The builder, leaving out empty text fields (blanks in a [`SampleRecord`]) and, unless
    /// `birth_date`, the birth date.
    fn builder_of(&self, birth_date: bool) -> crate::CustomerBuilder {
        let filled = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let mut b = crate::Customer::builder()
            .given_name(self.given_name.as_str())
            .family_name(self.family_name.as_str())
            .phone_region(self.phone_country.as_str())
            .address(crate::AddressParts {
                lines: filled(&self.street).into_iter().collect(),
                locality: filled(&self.locality),
                region: None,
                postcode: filled(&self.postcode),
                country: Some(self.country.clone()),
            })
            .stage(self.stage)
            .owner(self.owner.as_str())
            .source(self.source.as_str());
        if !self.external_id.1.is_empty() {
            b = b.external_id(self.external_id.0.as_str(), self.external_id.1.as_str());
        }
        if !self.email.is_empty() {
            b = b.email(self.email.as_str());
        }
        if !self.phone.is_empty() {
            b = b.phone(self.phone.as_str());
        }
        if birth_date {
            b = b.birth_date(self.birth_date);
        }
        for tag in &self.tags {
            b = b.tag(tag.as_str());
        }
        if let Some(organization) = &self.organization {
            b = b.organization(organization.as_str());
        }
        if let Some(job_title) = &self.job_title {
            b = b.job_title(job_title.as_str());
        }
        b
    }
}

/// The first `n` customers of [`Generator::new(seed)`](Generator::new).
pub fn generate(seed: u64, n: usize) -> Vec<SampleCustomer> {
    Generator::new(seed).take(n).collect()
}

/// An endless, deterministic stream of [`SampleCustomer`]s.
///
/// Memory grows by about 8 bytes a customer (the email fingerprints that keep emails unique).
#[derive(Debug, Clone)]
pub struct Generator {
    tables: &'static Tables,
    rng: SplitMix64,
    /// Sequence number of the next customer; makes external ids unique.
    index: u64,
    /// Next sequence number per phone pattern; makes phones unique.
    phone_counters: Vec<u64>,
    /// Fingerprints of the email match keys handed out so far.
    email_keys: HashSet<u64>,
    /// Recent customers not yet in a household, which a new customer may join.
    households: VecDeque<Household>,
}

impl Generator {
    /// A generator whose whole output is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        let tables = tables();
        Generator {
            tables,
            rng: SplitMix64(seed),
            index: 0,
            phone_counters: vec![0; tables.phone_patterns],
            email_keys: HashSet::new(),
            households: VecDeque::with_capacity(HOUSEHOLD_WINDOW),
        }
    }

    fn next_customer(&mut self) -> SampleCustomer {
        let t = self.tables;
        let joined = if !self.households.is_empty() && self.rng.chance(HOUSEHOLD_PER_MILLE) {
            let at = self.rng.below(self.households.len() as u64) as usize;
            self.households.remove(at)
        } else {
            None
        };
        let home = match &joined {
            Some(h) => h.clone(),
            None => self.new_household(),
        };
        let ct = &t.countries[home.country];

        let mut given_name = capitalise(t.given[t.given_pick.sample(&mut self.rng)]);
        for _ in 0..3 {
            if given_name != home.given_name {
                break;
            }
            given_name = capitalise(t.given[t.given_pick.sample(&mut self.rng)]);
        }
        let day = BIRTH_FIRST_DAY
            + self
                .rng
                .below((BIRTH_LAST_DAY - BIRTH_FIRST_DAY + 1) as u64) as i32;
        let birth_date = NaiveDate::from_num_days_from_ce_opt(day).unwrap_or_default();

        let organization = self.rng.chance(350).then(|| self.organization(ct));
        let job_title = if self
            .rng
            .chance(if organization.is_some() { 850 } else { 30 })
        {
            Some(self.rng.pick(&t.job_titles).to_string())
        } else {
            None
        };
        let email = self.email(
            &given_name,
            &home.family_name,
            birth_date,
            ct,
            organization.as_deref(),
        );

        let tag_count = self.rng.weighted_index(&[30, 35, 22, 13]);
        let mut tags: Vec<String> = Vec::with_capacity(tag_count);
        for _ in 0..tag_count * 4 {
            if tags.len() == tag_count {
                break;
            }
            let tag = t.tags[t.tag_pick.sample(&mut self.rng)];
            if !tags.iter().any(|have| have == tag) {
                tags.push(tag.to_string());
            }
        }
        // Weights in `Stage::ALL` order: lead, prospect, customer, churned.
        let stage = crate::Stage::ALL[self.rng.weighted_index(&[35, 20, 38, 7])];
        let owner = t.owners[t.owner_pick.sample(&mut self.rng)].to_string();
        let source = t.sources[t.source_pick.sample(&mut self.rng)].to_string();
        let (system, prefix) = [("shop", ""), ("crm", "C-"), ("pos", "P"), ("erp", "E")]
            [self.rng.weighted_index(&[50, 30, 15, 5])];
        let external_id = (
            system.to_string(),
            format!("{prefix}{:09}", spread(self.index, 1_000_000_000)),
        );
        self.index += 1;

        if joined.is_none() {
            if self.households.len() == HOUSEHOLD_WINDOW {
                self.households.pop_front();
            }
            self.households.push_back(Household {
                given_name: given_name.clone(),
                ..home.clone()
            });
        }
        SampleCustomer {
            given_name,
            family_name: home.family_name,
            email,
            phone: home.phone,
            phone_country: home.phone_country,
            street: home.street,
            locality: home.locality,
            postcode: home.postcode,
            country: ct.spec.code.to_string(),
            birth_date,
            tags,
            stage,
            owner,
            source,
            external_id,
            organization,
            job_title,
        }
    }

    /// A new address, family name and phone.
    fn new_household(&mut self) -> Household {
        let t = self.tables;
        let country = t.country_pick.sample(&mut self.rng);
        let ct = &t.countries[country];
        let family_name = ct.family[ct.family_pick.sample(&mut self.rng)].clone();
        let city = &ct.cities[ct.city_pick.sample(&mut self.rng)];
        let prefix = *self.rng.pick(&city.postcode_prefixes);
        let postcode = postcode(ct.spec.postcode, prefix, &mut self.rng);
        let street = self.street(ct);
        // About 2% of phones are foreign: always written internationally.
        let (phone_ct, foreign) = if self.rng.chance(20) {
            (&t.countries[t.country_pick.sample(&mut self.rng)], true)
        } else {
            (ct, false)
        };
        let patterns = if self.rng.chance(600) {
            &phone_ct.mobile
        } else {
            &phone_ct.fixed
        };
        let pattern = self.rng.pick(patterns);
        let counter = &mut self.phone_counters[pattern.id];
        // The offset keeps patterns from sharing their trailing digits in step.
        let number = spread(
            *counter + 104_729 * pattern.id as u64,
            10u64.pow(pattern.digits),
        );
        *counter += 1;
        let international = foreign || self.rng.chance(300);
        let phone = fill_digits(
            if international {
                pattern.international
            } else {
                pattern.national
            },
            number,
            pattern.digits,
        );
        Household {
            given_name: String::new(),
            family_name,
            street,
            locality: city.name.to_string(),
            postcode,
            country,
            phone,
            phone_country: phone_ct.spec.code.to_string(),
        }
    }

    fn street(&mut self, ct: &CountryTables) -> String {
        let stem = self.rng.pick(&ct.streets);
        let kind = self.rng.pick(&ct.street_types);
        match ct.spec.street {
            StreetStyle::NumberFirst { max_number } => {
                format!("{} {stem} {kind}", 1 + self.rng.below(max_number))
            }
            StreetStyle::Joined => format!("{stem}{kind} {}", 1 + self.rng.below(120)),
            StreetStyle::French => format!("{} {kind} {stem}", 1 + self.rng.below(120)),
            StreetStyle::TypeFirst => format!("{kind} {stem}, {}", 1 + self.rng.below(120)),
        }
    }

    fn organization(&mut self, ct: &CountryTables) -> String {
        let t = self.tables;
        let suffix = self.rng.pick(&ct.org_suffixes);
        match self.rng.weighted_index(&[50, 30, 20]) {
            0 => format!(
                "{} {} {suffix}",
                self.rng.pick(&t.org_words),
                self.rng.pick(&t.org_kinds)
            ),
            1 => {
                let family = &ct.family[ct.family_pick.sample(&mut self.rng)];
                format!("{family} {} {suffix}", self.rng.pick(&t.org_kinds))
            }
            _ => format!("{} {suffix}", self.rng.pick(&t.org_words)),
        }
    }

    /// A unique email; if the natural address is taken, a number is appended.
    fn email(
        &mut self,
        given: &str,
        family: &str,
        birth: NaiveDate,
        ct: &CountryTables,
        organization: Option<&str>,
    ) -> String {
        use chrono::Datelike;
        let g = ascii_slug(given);
        let f = ascii_slug(family);
        let initial = &g[..1];
        let mut local = match self.rng.weighted_index(&[30, 15, 10, 10, 8, 7, 10, 10]) {
            0 => format!("{g}.{f}"),
            1 => format!("{g}{f}"),
            2 => format!("{initial}{f}"),
            3 => format!("{g}.{f}{:02}", birth.year() % 100),
            4 => format!("{f}.{g}"),
            5 => format!("{g}_{f}"),
            6 => format!("{g}{}", 10 + self.rng.below(990)),
            _ => format!("{initial}.{f}{}", 100 + self.rng.below(900)),
        };
        if self.rng.chance(50) {
            local = capitalise(&local);
        }
        let domain = match organization {
            // Half of the employed use a work address: the organization without its legal form.
            Some(org) if self.rng.chance(500) => {
                let name = org.rsplit_once(' ').map_or(org, |(name, _suffix)| name);
                format!("{}.{}", ascii_slug(name), ct.spec.work_tld)
            }
            _ => ct.email_domains[ct.domain_pick.sample(&mut self.rng)].to_string(),
        };
        let mut email = format!("{local}@{domain}");
        let mut n = 2u64;
        while !self.email_keys.insert(email_fingerprint(&email)) {
            email = format!("{local}{n}@{domain}");
            n += 1;
        }
        email
    }
}

impl Iterator for Generator {
    type Item = SampleCustomer;

    fn next(&mut self) -> Option<SampleCustomer> {
        Some(self.next_customer())
    }
}

/// What household members share. `given_name` is the first member's, so a second member gets a
/// different one.
#[derive(Debug, Clone)]
struct Household {
    given_name: String,
    family_name: String,
    street: String,
    locality: String,
    postcode: String,
    country: usize,
    phone: String,
    phone_country: String,
}

/// The generator's pseudo-random numbers: SplitMix64 (Steele, Lea, Flood 2014), tiny, fast,
/// and the same on every platform. Public so that tests and benchmarks choosing customers at
/// random choose the same ones on every run.
///
/// ```
/// let mut a = customerdb::sample::SplitMix64::new(7);
/// let mut b = customerdb::sample::SplitMix64::new(7);
/// assert_eq!(a.below(1000), b.below(1000));
/// ```
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2⁻⁵⁰ for `n` under 2¹⁴).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    /// A uniform element of a non-empty slice (the embedded lists are checked non-empty by a
    /// test).
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn weighted_index(&mut self, weights: &[u64]) -> usize {
        let mut r = self.below(weights.iter().sum());
        for (i, w) in weights.iter().enumerate() {
            if r < *w {
                return i;
            }
            r -= *w;
        }
        weights.len() - 1
    }
}

/// A discrete distribution over ranks `0..n` by cumulative integer weights.
#[derive(Debug)]
struct Ranked {
    cumulative: Vec<u64>,
}

impl Ranked {
    /// Zipf–Mandelbrot with exponent 1: rank `k` has weight `1 / (k + q)`. A larger `q` flattens
    /// the head. Integer arithmetic keeps the table identical on every platform.
    fn zipf(n: usize, q: u64) -> Self {
        let mut total = 0u64;
        let cumulative = (0..n as u64)
            .map(|k| {
                total += (1u64 << 40) / (k + q);
                total
            })
            .collect();
        Ranked { cumulative }
    }

    fn sample(&self, rng: &mut SplitMix64) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0);
        let r = rng.below(total);
        self.cumulative.partition_point(|&c| c <= r)
    }
}

#[derive(Debug, Clone, Copy)]
enum PostcodeShape {
    /// GB: outward code (area + district) and inward code, "SW1A 1AA" style.
    Uk,
    /// The prefix followed by random digits up to this length (US, DE, FR, ES, IT, AU).
    Digits(usize),
    /// NL: "1234 AB".
    Dutch,
    /// IE Eircode: routing key and unique identifier, "D02 X285".
    Eircode,
    /// CA: "K1A 0B1".
    Canadian,
}

#[derive(Debug, Clone, Copy)]
enum StreetStyle {
    /// "12 Church Road".
    NumberFirst { max_number: u64 },
    /// "Kirchstraße 12", "Molenweg 12".
    Joined,
    /// "12 rue de la Gare".
    French,
    /// "Via Roma, 12", "Calle Mayor, 12".
    TypeFirst,
}

#[derive(Debug)]
struct CountrySpec {
    code: &'static str,
    weight: u64,
    postcode: PostcodeShape,
    street: StreetStyle,
    work_tld: &'static str,
}

const COUNTRIES: [CountrySpec; 10] = [
    CountrySpec {
        code: "GB",
        weight: 22,
        postcode: PostcodeShape::Uk,
        street: StreetStyle::NumberFirst { max_number: 150 },
        work_tld: "co.uk",
    },
    CountrySpec {
        code: "US",
        weight: 20,
        postcode: PostcodeShape::Digits(5),
        street: StreetStyle::NumberFirst { max_number: 9999 },
        work_tld: "com",
    },
    CountrySpec {
        code: "DE",
        weight: 14,
        postcode: PostcodeShape::Digits(5),
        street: StreetStyle::Joined,
        work_tld: "de",
    },
    CountrySpec {
        code: "FR",
        weight: 11,
        postcode: PostcodeShape::Digits(5),
        street: StreetStyle::French,
        work_tld: "fr",
    },
    CountrySpec {
        code: "ES",
        weight: 8,
        postcode: PostcodeShape::Digits(5),
        street: StreetStyle::TypeFirst,
        work_tld: "es",
    },
    CountrySpec {
        code: "IT",
        weight: 8,
        postcode: PostcodeShape::Digits(5),
        street: StreetStyle::TypeFirst,
        work_tld: "it",
    },
    CountrySpec {
        code: "NL",
        weight: 6,
        postcode: PostcodeShape::Dutch,
        street: StreetStyle::Joined,
        work_tld: "nl",
    },
    CountrySpec {
        code: "IE",
        weight: 4,
        postcode: PostcodeShape::Eircode,
        street: StreetStyle::NumberFirst { max_number: 150 },
        work_tld: "ie",
    },
    CountrySpec {
        code: "AU",
        weight: 4,
        postcode: PostcodeShape::Digits(4),
        street: StreetStyle::NumberFirst { max_number: 400 },
        work_tld: "com.au",
    },
    CountrySpec {
        code: "CA",
        weight: 3,
        postcode: PostcodeShape::Canadian,
        street: StreetStyle::NumberFirst { max_number: 2999 },
        work_tld: "ca",
    },
];

#[derive(Debug)]
struct City {
    name: &'static str,
    postcode_prefixes: Vec<&'static str>,
}

#[derive(Debug)]
struct PhonePattern {
    national: &'static str,
    international: &'static str,
    /// Number of `x` placeholders, the same in both patterns.
    digits: u32,
    /// Index into `Generator::phone_counters`.
    id: usize,
}

#[derive(Debug)]
struct CountryTables {
    spec: &'static CountrySpec,
    cities: Vec<City>,
    city_pick: Ranked,
    family: Vec<String>,
    family_pick: Ranked,
    streets: Vec<&'static str>,
    street_types: Vec<&'static str>,
    email_domains: Vec<&'static str>,
    domain_pick: Ranked,
    org_suffixes: Vec<&'static str>,
    mobile: Vec<PhonePattern>,
    fixed: Vec<PhonePattern>,
}

#[derive(Debug)]
struct Tables {
    countries: Vec<CountryTables>,
    country_pick: CountryPick,
    given: Vec<&'static str>,
    given_pick: Ranked,
    tags: Vec<&'static str>,
    tag_pick: Ranked,
    owners: Vec<&'static str>,
    owner_pick: Ranked,
    sources: Vec<&'static str>,
    source_pick: Ranked,
    job_titles: Vec<&'static str>,
    org_words: Vec<&'static str>,
    org_kinds: Vec<&'static str>,
    phone_patterns: usize,
}

#[derive(Debug)]
struct CountryPick(Vec<u64>);

impl CountryPick {
    fn sample(&self, rng: &mut SplitMix64) -> usize {
        rng.weighted_index(&self.0)
    }
}

/// The parsed embedded lists, built once per process.
fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(build_tables)
}

/// Rows of `lists.tsv` for one list and country, in file (rank) order.
fn rows(list: &str, country: &str) -> impl Iterator<Item = Vec<&'static str>> {
    let (list, country) = (list.to_string(), country.to_string());
    LISTS
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| line.split('\t').collect::<Vec<_>>())
        .filter(move |f| f.len() >= 3 && f[0] == list && f[1] == country)
        .map(|f| f[2..].to_vec())
}

fn values(list: &str, country: &str) -> Vec<&'static str> {
    rows(list, country).map(|f| f[0]).collect()
}

fn build_tables() -> Tables {
    // given_names.txt is in rank order. Generated family names rank in a fixed shuffle per
    // country, so rank does not follow the alphabet; its seed is a constant, not the user's.
    let given: Vec<&'static str> = GIVEN_NAMES
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let onsets = values("family_onset", "*");
    let codas = values("family_coda", "*");
    let mut phone_patterns = 0;
    let countries = COUNTRIES
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let cc = spec.code;
            let cities: Vec<City> = rows("city", cc)
                .filter(|f| f.len() >= 2)
                .map(|f| City {
                    name: f[0],
                    postcode_prefixes: f[1].split(' ').collect(),
                })
                .collect();
            let mut family: Vec<String> = values("family", cc)
                .into_iter()
                .map(str::to_string)
                .collect();
            let mut built: Vec<String> = onsets
                .iter()
                .flat_map(|o| codas.iter().map(move |c| format!("{o}{c}")))
                .collect();
            shuffle(&mut built, 100 + i as u64);
            family.extend(
                built
                    .into_iter()
                    .filter(|b| !family.contains(b))
                    .collect::<Vec<_>>(),
            );
            let (mut mobile, mut fixed) = (Vec::new(), Vec::new());
            for f in rows("phone", cc).filter(|f| f.len() >= 3) {
                let pattern = PhonePattern {
                    national: f[1],
                    international: f[2],
                    digits: f[1].matches('x').count() as u32,
                    id: phone_patterns,
                };
                phone_patterns += 1;
                if f[0] == "mobile" {
                    mobile.push(pattern);
                } else {
                    fixed.push(pattern);
                }
            }
            let email_domains = values("email_domain", cc);
            CountryTables {
                spec,
                city_pick: Ranked::zipf(cities.len(), 2),
                cities,
                family_pick: Ranked::zipf(family.len(), 30),
                family,
                streets: values("street", cc),
                street_types: values("street_type", cc),
                domain_pick: Ranked::zipf(email_domains.len(), 1),
                email_domains,
                org_suffixes: values("org_suffix", cc),
                mobile,
                fixed,
            }
        })
        .collect();
    let tags = values("tag", "*");
    let owners = values("owner", "*");
    let sources = values("source", "*");
    Tables {
        countries,
        country_pick: CountryPick(COUNTRIES.iter().map(|c| c.weight).collect()),
        given_pick: Ranked::zipf(given.len(), 10),
        given,
        tag_pick: Ranked::zipf(tags.len(), 3),
        tags,
        owner_pick: Ranked::zipf(owners.len(), 5),
        owners,
        source_pick: Ranked::zipf(sources.len(), 2),
        sources,
        job_titles: values("job_title", "*"),
        org_words: values("org_word", "*"),
        org_kinds: values("org_kind", "*"),
        phone_patterns,
    }
}

/// Fisher–Yates with its own PRNG stream.
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut rng = SplitMix64(seed);
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// A bijection of `0..modulus` (a power of ten) that spreads consecutive sequence numbers, so
/// that unique counters give unique but unordered-looking digits.
fn spread(k: u64, modulus: u64) -> u64 {
    let m = u128::from(modulus);
    ((u128::from(k) % m * (SPREAD_MULTIPLIER % m) + SPREAD_OFFSET % m) % m) as u64
}

/// Replaces the `x`s of `pattern`, left to right, with the zero-padded digits of `number`.
fn fill_digits(pattern: &str, number: u64, width: u32) -> String {
    let digits = format!("{number:0width$}", width = width as usize);
    let mut digits = digits.chars();
    pattern
        .chars()
        .map(|c| {
            if c == 'x' {
                digits.next().unwrap_or('0')
            } else {
                c
            }
        })
        .collect()
}

fn postcode(shape: PostcodeShape, prefix: &str, rng: &mut SplitMix64) -> String {
    const UK_INWARD: &[u8] = b"ABDEFGHJLNPQRSTUWXYZ";
    const DUTCH: &[u8] = b"ABCDEGHJKLMNPRTVWXZ";
    const EIR_FIRST: &[u8] = b"ACDEFHKNPRTVWXY";
    const EIR: &[u8] = b"0123456789ACDEFHKNPRTVWXY";
    const CA: &[u8] = b"ABCEGHJKLMNPRSTVWXYZ";
    fn pick(rng: &mut SplitMix64, set: &[u8]) -> char {
        char::from(*rng.pick(set))
    }
    match shape {
        PostcodeShape::Uk => {
            let district = 1 + rng.below(20);
            let inward = (rng.below(10), pick(rng, UK_INWARD), pick(rng, UK_INWARD));
            format!("{prefix}{district} {}{}{}", inward.0, inward.1, inward.2)
        }
        PostcodeShape::Digits(len) => {
            let mut s = prefix.to_string();
            while s.len() < len {
                s.push(char::from(b'0' + rng.below(10) as u8));
            }
            s
        }
        PostcodeShape::Dutch => format!(
            "{prefix}{:02} {}{}",
            rng.below(100),
            pick(rng, DUTCH),
            pick(rng, DUTCH)
        ),
        PostcodeShape::Eircode => {
            let first = pick(rng, EIR_FIRST);
            format!(
                "{prefix} {first}{}{}{}",
                pick(rng, EIR),
                pick(rng, EIR),
                pick(rng, EIR)
            )
        }
        PostcodeShape::Canadian => {
            let third = pick(rng, CA);
            format!(
                "{prefix}{third} {}{}{}",
                rng.below(10),
                pick(rng, CA),
                rng.below(10)
            )
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Lower-case ASCII letters and digits of `s`, with the Latin diacritics of the embedded lists
/// folded ("Müller" → "muller") and everything else dropped ("O'Brien" → "obrien"). Never empty.
fn ascii_slug(s: &str) -> String {
    let mut out: String = crate::normalize::fold_key(s)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    if out.is_empty() {
        out.push('x');
    }
    out
}

/// FNV-1a of the strictest plausible email match key: lower-cased, dots removed from the local
/// part. Equal keys give equal fingerprints, so distinct fingerprints mean distinct keys.
fn email_fingerprint(email: &str) -> u64 {
    let (local, domain) = email.split_once('@').unwrap_or((email, ""));
    let mut hash = 0xCBF2_9CE4_8422_2325u64;
    let bytes = local
        .bytes()
        .filter(|&b| b != b'.')
        .chain(std::iter::once(b'@'))
        .chain(domain.bytes());
    for b in bytes {
        hash ^= u64::from(b.to_ascii_lowercase());
        hash = hash.wrapping_mul(0x0100_0000_01B3);
    }
    hash
}

#[cfg(test)]
mod tests {
    //! Guards the generator's promises: determinism, uniqueness, the intended sharing of phones,
    //! and that every value passes customerdb's validation.
    use std::collections::{HashMap, HashSet};

    use super::*;

    #[test]
    fn same_seed_gives_same_customers() {
        assert_eq!(generate(7, 2_000), generate(7, 2_000));
        assert_ne!(generate(7, 50), generate(8, 50));
        assert_eq!(
            generate(7, 300),
            Generator::new(7).take(300).collect::<Vec<_>>()
        );
    }

    #[test]
    fn output_is_pinned_for_a_fixed_seed() {
        // Catches any change of the stream, which would silently change benchmark data.
        let c = generate(1, 1000);
        let fingerprint = c.iter().fold(0u64, |h, c| {
            h.rotate_left(5)
                ^ email_fingerprint(&format!(
                    "{}|{}|{}|{}",
                    c.email, c.phone, c.postcode, c.birth_date
                ))
        });
        assert_eq!(
            fingerprint, PINNED_FINGERPRINT,
            "the sample stream changed; update the pin on purpose"
        );
    }

    const PINNED_FINGERPRINT: u64 = 8_096_086_297_015_425_250;

    #[test]
    fn embedded_lists_are_complete() {
        let t = tables();
        assert!(t.given.len() > 2_000);
        assert_eq!(t.countries.len(), 10);
        for ct in &t.countries {
            assert_eq!(ct.cities.len(), 30, "{}", ct.spec.code);
            assert!(ct.cities.iter().all(|c| !c.postcode_prefixes.is_empty()));
            assert!(ct.family.len() > 2_000);
            for list in [
                &ct.streets,
                &ct.street_types,
                &ct.email_domains,
                &ct.org_suffixes,
            ] {
                assert!(!list.is_empty(), "{}", ct.spec.code);
            }
            assert!(
                !ct.mobile.is_empty() && !ct.fixed.is_empty(),
                "{}",
                ct.spec.code
            );
            for p in ct.mobile.iter().chain(&ct.fixed) {
                assert_eq!(p.digits as usize, p.international.matches('x').count());
                assert!(p.digits >= 6);
            }
        }
        assert_eq!(t.tags.len(), 30);
        assert_eq!(t.owners.len(), 20);
        for list in [&t.sources, &t.job_titles, &t.org_words, &t.org_kinds] {
            assert!(!list.is_empty());
        }
    }

    #[test]
    fn emails_and_external_ids_are_unique() {
        let customers = generate(3, 50_000);
        let mut keys = HashSet::new();
        let mut ids = HashSet::new();
        for c in &customers {
            let (local, domain) = c.email.split_once('@').expect("an @");
            assert!(c.email.is_ascii() && !local.is_empty() && local.len() <= 64);
            assert!(
                local
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
            );
            assert!(!local.starts_with('.') && !local.ends_with('.') && !local.contains(".."));
            assert!(domain.contains('.'));
            assert!(
                keys.insert(format!("{}@{domain}", local.replace('.', "")).to_lowercase()),
                "{}",
                c.email
            );
            assert!(ids.insert(c.external_id.clone()));
        }
    }

    #[test]
    fn about_five_percent_share_a_phone() {
        // Household members copy the phone string verbatim and every other phone comes from a
        // unique counter, so equal strings are exactly equal numbers (equal E.164).
        let customers = generate(4, 50_000);
        let mut by_number: HashMap<&str, usize> = HashMap::new();
        for c in &customers {
            *by_number.entry(c.phone.as_str()).or_default() += 1;
        }
        let shared: usize = by_number.values().filter(|&&n| n > 1).sum();
        let fraction = shared as f64 / customers.len() as f64;
        assert!(
            (0.04..0.06).contains(&fraction),
            "shared fraction {fraction}"
        );
    }

    #[test]
    fn distributions_are_realistic() {
        let customers = generate(5, 50_000);
        let distinct = |f: fn(&SampleCustomer) -> String| {
            customers.iter().map(f).collect::<HashSet<_>>().len()
        };
        assert!(distinct(|c| c.given_name.clone()) > 2_000);
        assert!(distinct(|c| c.family_name.clone()) > 2_000);
        assert_eq!(distinct(|c| format!("{}/{}", c.country, c.locality)), 300);
        assert_eq!(distinct(|c| c.owner.clone()), 20);
        let gb = customers.iter().filter(|c| c.country == "GB").count() as f64 / 50_000.0;
        assert!((0.2..0.24).contains(&gb), "GB share {gb}");
        let untagged = customers.iter().filter(|c| c.tags.is_empty()).count() as f64 / 50_000.0;
        let first = NaiveDate::from_ymd_opt(1940, 1, 1).expect("a date");
        let last = NaiveDate::from_ymd_opt(2006, 12, 31).expect("a date");
        assert!((0.28..0.32).contains(&untagged));
        for c in &customers {
            assert!(c.tags.len() <= 3);
            assert!((first..=last).contains(&c.birth_date), "{}", c.birth_date);
        }
    }

    #[test]
    fn postcodes_have_the_canonical_shape() {
        fn shape(s: &str) -> String {
            s.chars()
                .map(|c| match c {
                    '0'..='9' => '9',
                    'A'..='Z' => 'A',
                    other => other,
                })
                .collect()
        }
        for c in generate(6, 20_000) {
            let s = shape(&c.postcode);
            let ok = match c.country.as_str() {
                "GB" => ["A9 9AA", "A99 9AA", "AA9 9AA", "AA99 9AA"].contains(&s.as_str()),
                "US" | "DE" | "FR" | "ES" | "IT" => s == "99999",
                "AU" => s == "9999",
                "NL" => s == "9999 AA" && !c.postcode.starts_with('0'),
                "IE" => s.len() == 8 && s.starts_with("A99 ") && c.postcode.is_ascii(),
                "CA" => s == "A9A 9A9",
                _ => false,
            };
            assert!(ok, "{} postcode {:?}", c.country, c.postcode);
        }
    }

    #[test]
    fn every_phone_is_valid() -> crate::Result<()> {
        // Phone validation is slow in debug builds; 3,000 cover every pattern many times over.
        for c in generate(8, 3_000) {
            crate::Phone::parse(&c.phone, Some(crate::CountryCode::parse(&c.phone_country)?))?;
        }
        Ok(())
    }

    #[test]
    fn every_customer_is_accepted_by_the_store() -> crate::Result<()> {
        use crate::Read;
        let store = crate::Store::in_memory()?;
        let customers = generate(9, 1_000);
        let mut tx = store.begin_write()?;
        for c in &customers {
            tx.insert(c.to_builder())?;
        }
        tx.commit()?;
        let rtx = store.begin_read()?;
        assert_eq!(rtx.count()?, 1_000);
        assert!(rtx.find_by_email(&customers[17].email)?.is_some());
        Ok(())
    }
}
