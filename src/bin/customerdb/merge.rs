//! `merge`, `unmerge` and `review`: acting on duplicates, each write in one transaction
//! recorded in history as done by `cli`.

use std::process::ExitCode;

use customerdb::{MergeId, MergePlan, Read, Survivorship};
use serde_json::{Value, json};

use crate::{Args, CliError, db, id_args, print_lines};

/// `merge`: prints the plan for merging the others into the survivor, and applies it unless
/// `--dry-run`.
pub(crate) fn merge(a: &Args) -> Result<ExitCode, CliError> {
    let ids = id_args(a, 0, 2, "a SURVIVOR and at least one OTHER customer ID")?;
    let (survivor, others) = (ids[0], &ids[1..]);
    let rule = survivorship(a.rule.as_deref())?;
    let store = db(a)?;
    let mut tx = store.begin_write_as("cli")?;
    let plan = tx.merge_plan(survivor, others, &rule)?;
    print_lines(&[plan_json(&plan)])?;
    if a.dry_run {
        // Dropping the transaction aborts it: nothing is written.
        return Ok(ExitCode::SUCCESS);
    }
    let merge = tx.merge(&plan)?;
    tx.commit()?;
    print_lines(&[json!({ "merge": merge.0 })])
}

/// `unmerge`: undoes a merge by the id `merge` printed.
pub(crate) fn unmerge(a: &Args) -> Result<ExitCode, CliError> {
    let [id] = a.positional.as_slice() else {
        return Err(CliError::Usage("unmerge takes one MERGE_ID".into()));
    };
    let merge = id
        .parse()
        .map(MergeId)
        .map_err(|_| CliError::Usage(format!("\"{id}\" is not a merge id")))?;
    let store = db(a)?;
    let mut tx = store.begin_write_as("cli")?;
    tx.unmerge(merge)?;
    tx.commit()?;
    println!("unmerged {id}");
    Ok(ExitCode::SUCCESS)
}

/// `review`: lists the pending pairs, or records a decision on one.
pub(crate) fn review(a: &Args) -> Result<ExitCode, CliError> {
    if a.decide.is_empty() {
        if !a.positional.is_empty() || a.by.is_some() {
            return Err(CliError::Usage(
                "review takes --decide A B same|different --by NAME, or nothing".into(),
            ));
        }
        let tx = db(a)?.begin_read()?;
        return print_lines(&tx.review_queue(true)?);
    }
    let [x, y, verdict] = a.decide.as_slice() else {
        return Err(CliError::Usage("--decide takes A B same|different".into()));
    };
    let ids = [x, y]
        .iter()
        .map(|s| {
            s.parse()
                .map_err(|_| CliError::Usage(format!("\"{s}\" is not a customer ID")))
        })
        .collect::<Result<Vec<customerdb::CustomerId>, _>>()?;
    let same = match verdict.as_str() {
        "same" => true,
        "different" => false,
        other => {
            return Err(CliError::Usage(format!(
                "a decision is same or different, got \"{other}\""
            )));
        }
    };
    let by =
        a.by.as_deref()
            .ok_or_else(|| CliError::Usage("--decide needs --by NAME".into()))?;
    let store = db(a)?;
    let mut tx = store.begin_write_as("cli")?;
    tx.decide(ids[0], ids[1], same, by)?;
    tx.commit()?;
    println!("decided {} and {}: {verdict} (by {by})", ids[0], ids[1]);
    Ok(ExitCode::SUCCESS)
}

/// Reads `--rule`: `survivor` (the default), `most-recent`, `most-complete` or
/// `trusted:SOURCE,...`.
fn survivorship(rule: Option<&str>) -> Result<Survivorship, CliError> {
    Ok(match rule {
        None | Some("survivor") => Survivorship::Survivor,
        Some("most-recent") => Survivorship::MostRecent,
        Some("most-complete") => Survivorship::MostComplete,
        Some(r) => match r.strip_prefix("trusted:") {
            Some(list) if !list.trim().is_empty() => {
                Survivorship::TrustedSources(list.split(',').map(|s| s.trim().to_owned()).collect())
            }
            _ => {
                return Err(CliError::Usage(format!(
                    "--rule is survivor, most-recent, most-complete or trusted:SOURCE,..., got \"{r}\""
                )));
            }
        },
    })
}

/// A merge plan as JSON: who survives, who is merged, the survivor's data after the merge,
/// which single-valued fields come from whom, and how many activities move.
fn plan_json(plan: &MergePlan) -> Value {
    json!({
        "survivor": plan.survivor,
        "merged": plan.merged,
        "result": plan.result,
        "taken": plan.taken,
        "activities": plan.activities,
    })
}
