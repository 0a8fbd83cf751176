//! Given-name nickname equivalence (`Bob` and `Robert`), from an embedded list.

use std::collections::HashMap;
use std::sync::LazyLock;

use super::hash::FastHash;
use crate::normalize::name_key;

/// The embedded list, as shipped by its authors.
const NAMES_CSV: &str = include_str!("nicknames.csv");

/// The list, indexed by name.
struct Nicknames {
    ids: HashMap<String, u32, FastHash>,
    /// Per name id: the ids of the names that list it, sorted.
    listed_by: Vec<Vec<u32>>,
    /// Per name id: of those, the ones longer than the name, sorted.
    diminutive_of: Vec<Vec<u32>>,
}

static NICKNAMES: LazyLock<Nicknames> = LazyLock::new(|| Nicknames::parse(NAMES_CSV));

impl Nicknames {
    /// Reads `name1,has_nickname,name2` rows; the header and malformed rows are skipped.
    fn parse(csv: &str) -> Nicknames {
        let mut n = Nicknames {
            ids: HashMap::default(),
            listed_by: Vec::new(),
            diminutive_of: Vec::new(),
        };
        for line in csv.lines().skip(1) {
            let mut cells = line.trim_end_matches('\r').split(',');
            let (Some(head), Some("has_nickname"), Some(nick), None) =
                (cells.next(), cells.next(), cells.next(), cells.next())
            else {
                continue;
            };
            let (head, nick) = (name_key(head), name_key(nick));
            if head.is_empty() || nick.is_empty() || head == nick {
                continue;
            }
            let longer = head.chars().count() > nick.chars().count();
            let (h, k) = (n.intern(head), n.intern(nick));
            insert_sorted(&mut n.listed_by[k], h);
            if longer {
                insert_sorted(&mut n.diminutive_of[k], h);
            }
        }
        n
    }

    fn intern(&mut self, name: String) -> usize {
        let next = u32::try_from(self.listed_by.len()).unwrap_or(u32::MAX);
        let id = *self.ids.entry(name).or_insert(next);
        if id == next {
            self.listed_by.push(Vec::new());
            self.diminutive_of.push(Vec::new());
        }
        id as usize
    }

    fn id(&self, name: &str) -> Option<(u32, usize)> {
        self.ids.get(name).map(|&i| (i, i as usize))
    }
}

fn insert_sorted(list: &mut Vec<u32>, id: usize) {
    let id = u32::try_from(id).unwrap_or(u32::MAX);
    if let Err(at) = list.binary_search(&id) {
        list.insert(at, id);
    }
}

/// Whether two sorted lists share an element.
fn intersect(x: &[u32], y: &[u32]) -> bool {
    let (mut i, mut j) = (0, 0);
    while let (Some(a), Some(b)) = (x.get(i), y.get(j)) {
        match a.cmp(b) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return true,
        }
    }
    false
}

/// Whether two given-name keys ([`name_key`]) are the same name or nicknames of one name,
/// in either order.
///
/// The list is `names.csv` of [carltonnorthern/nicknames](https://github.com/carltonnorthern/nicknames)
/// (Apache-2.0; attribution in `src/dedup/NICKNAMES.md`): rows `robert,has_nickname,bob`,
/// read in both directions. The list is loose: it also has `bill,has_nickname,robert` and
/// `bill,has_nickname,william`, so treating every name with its listed names as one group
/// would make Robert and William the same name. Two names are therefore equivalent when
///
/// - one lists the other (`robert`/`bob`, either way round), or
/// - both are listed by a third name *longer than either*, i.e. both are diminutives of one
///   fuller name (`bob` and `rob` of `robert`, `bobby` and `rob` of `robert`).
///
/// So `robert` and `william` (linked only through the shorter `bill`) are not equivalent, and
/// neither are `aaron` and `ronald`, which merely share the nickname `ron`.
///
/// ```
/// use customerdb::dedup::are_nicknames;
/// assert!(are_nicknames("bob", "robert"));
/// assert!(are_nicknames("robert", "bob"));
/// assert!(are_nicknames("bob", "rob"));
/// assert!(!are_nicknames("aaron", "ronald"));
/// ```
pub fn are_nicknames(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (nickname_id(a), nickname_id(b)) {
        (Some(a), Some(b)) => are_nickname_ids(a, b),
        _ => false,
    }
}

/// A name's id in the embedded list, for [`are_nickname_ids`]; `None` if it is not listed.
pub(crate) fn nickname_id(name: &str) -> Option<u32> {
    NICKNAMES.id(name).map(|(id, _)| id)
}

/// [`are_nicknames`] of two listed names by their ids (no hashing in a comparison loop).
pub(crate) fn are_nickname_ids(ia: u32, ib: u32) -> bool {
    if ia == ib {
        return true;
    }
    let n = &*NICKNAMES;
    let listed = |x: u32| n.listed_by.get(x as usize).map_or(&[][..], Vec::as_slice);
    let diminutive = |x: u32| {
        n.diminutive_of
            .get(x as usize)
            .map_or(&[][..], Vec::as_slice)
    };
    listed(ia).binary_search(&ib).is_ok()
        || listed(ib).binary_search(&ia).is_ok()
        || intersect(diminutive(ia), diminutive(ib))
}

/// How many distinct names the embedded list knows.
pub fn nickname_names() -> usize {
    NICKNAMES.listed_by.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nickname_lookup_works_both_directions() {
        assert!(are_nicknames("robert", "bob"));
        assert!(are_nicknames("bob", "robert"));
        assert!(are_nicknames("william", "bill"));
        assert!(are_nicknames("bill", "william"));
        assert!(are_nicknames("elizabeth", "beth"));
    }

    #[test]
    fn nicknames_of_one_name_are_equivalent() {
        assert!(are_nicknames("bob", "rob"));
        assert!(are_nicknames("rob", "bobby"));
    }

    #[test]
    fn a_shared_nickname_across_names_is_not_equivalence() {
        assert!(are_nicknames("aaron", "ron"));
        assert!(are_nicknames("ronald", "ron"));
        assert!(!are_nicknames("aaron", "ronald"));
        // Linked only through `bill`, which lists both.
        assert!(are_nicknames("bill", "robert"));
        assert!(are_nicknames("bill", "william"));
        assert!(!are_nicknames("robert", "william"));
        assert!(!are_nicknames("zzyzx", "robert"));
    }

    #[test]
    fn dotted_nicknames_are_read_as_name_keys() {
        // `k.c.` in the list; `name_key` turns dots into spaces.
        assert!(are_nicknames("casey", "k c"));
    }

    #[test]
    fn the_whole_list_is_read() {
        // 2,691 rows over 2,164 distinct names; a dropped row would show here.
        assert_eq!(nickname_names(), 2164);
        let rows = NAMES_CSV.lines().skip(1).filter(|l| !l.is_empty()).count();
        assert_eq!(rows, 2691);
    }
}
