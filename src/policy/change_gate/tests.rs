use super::*;

fn condition(state: RequiredState) -> ChangeCondition {
    ChangeCondition {
        from: ChangeSource::Header("x-gerrit-change".into()),
        projects: vec![NamePattern::parse("infra/*").unwrap()],
        branches: vec![NamePattern::parse("main").unwrap()],
        state,
        revision_header: None,
        approval: None,
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn change(state: ChangeState) -> ChangeFacts {
    ChangeFacts {
        number: 1234,
        project: "infra/deploy".into(),
        branch: "main".into(),
        state,
        current_revision: Some("abcdef0123456789abcdef0123456789abcdef01".into()),
        unmet_requirements: Vec::new(),
        owner: names(&["olivia", "1000001"]),
        votes: vec![VoteFact {
            label: "Code-Review".into(),
            value: 2,
            max: 2,
            voter: names(&["rita", "1000002"]),
        }],
    }
}

#[test]
fn a_merged_change_of_an_allowed_project_and_branch_holds() {
    let c = condition(RequiredState::Merged);
    assert_eq!(c.judge(&change(ChangeState::Merged), None, &[]), Ok(()));
    assert_eq!(
        c.judge(&change(ChangeState::Open), None, &[]),
        Err("change 1234 is not merged".into())
    );
    assert_eq!(
        c.judge(&change(ChangeState::Abandoned), None, &[]),
        Err("change 1234 is abandoned".into())
    );
}

#[test]
fn the_wrong_project_or_branch_says_which() {
    let c = condition(RequiredState::Merged);
    let other_project = ChangeFacts {
        project: "apps/web".into(),
        ..change(ChangeState::Merged)
    };
    assert_eq!(
        c.judge(&other_project, None, &[]),
        Err("change 1234 is in project apps/web, which this route does not serve".into())
    );
    let other_branch = ChangeFacts {
        branch: "stable".into(),
        ..change(ChangeState::Merged)
    };
    assert!(c
        .judge(&other_branch, None, &[])
        .unwrap_err()
        .contains("branch stable"));
}

#[test]
fn submittable_needs_every_requirement_and_names_the_missing_ones() {
    let c = condition(RequiredState::Submittable);
    assert_eq!(c.judge(&change(ChangeState::Open), None, &[]), Ok(()));
    assert_eq!(c.judge(&change(ChangeState::Merged), None, &[]), Ok(()));
    let missing = ChangeFacts {
        unmet_requirements: names(&["Verified"]),
        ..change(ChangeState::Open)
    };
    assert_eq!(
        c.judge(&missing, None, &[]),
        Err("change 1234 cannot be submitted: Verified is missing".into())
    );
    let two = ChangeFacts {
        unmet_requirements: names(&["Code-Review", "Verified"]),
        ..change(ChangeState::Open)
    };
    assert!(c
        .judge(&two, None, &[])
        .unwrap_err()
        .ends_with("Code-Review, Verified are missing"));
}

#[test]
fn the_revision_must_be_the_current_patch_set_or_merged_commit() {
    let c = ChangeCondition {
        revision_header: Some("x-gerrit-revision".into()),
        ..condition(RequiredState::Submittable)
    };
    let open = change(ChangeState::Open);
    let current = open.current_revision.clone().unwrap();
    assert_eq!(c.judge(&open, Some(&current), &[]), Ok(()));
    assert_eq!(
        c.judge(&open, Some("0123456789abcdef"), &[]),
        Err("revision 0123456789 is not change 1234's current patch set".into())
    );
    assert_eq!(
        c.judge(&change(ChangeState::Merged), Some("0123456789abcdef"), &[]),
        Err("revision 0123456789 is not change 1234's merged commit".into())
    );
    assert!(c
        .judge(&open, None, &[])
        .unwrap_err()
        .contains("names no revision"));
}

#[test]
fn an_approval_by_the_owner_or_the_caller_does_not_count_when_excluded() {
    let c = ChangeCondition {
        approval: Some(Approval {
            label: "Code-Review".into(),
            not_by: vec![NotBy::Owner, NotBy::Caller],
        }),
        ..condition(RequiredState::Submittable)
    };
    assert_eq!(
        c.judge(&change(ChangeState::Open), None, &names(&["alice"])),
        Ok(())
    );
    // rita approved; rita calling does not approve her own request.
    assert_eq!(
        c.judge(&change(ChangeState::Open), None, &names(&["rita"])),
        Err(
            "change 1234 has no Code-Review approval by someone other than its owner and you"
                .into()
        )
    );
    let by_owner = ChangeFacts {
        votes: vec![VoteFact {
            voter: names(&["olivia", "1000001"]),
            ..change(ChangeState::Open).votes[0].clone()
        }],
        ..change(ChangeState::Open)
    };
    assert!(c.judge(&by_owner, None, &[]).is_err());
    // +1 is not the label's approval.
    let plus_one = ChangeFacts {
        votes: vec![VoteFact {
            value: 1,
            ..change(ChangeState::Open).votes[0].clone()
        }],
        ..change(ChangeState::Open)
    };
    assert!(c.judge(&plus_one, None, &[]).is_err());
}

#[test]
fn name_patterns_are_exact_prefix_or_any() {
    assert!(NamePattern::parse("infra/*")
        .unwrap()
        .matches("infra/deploy"));
    assert!(!NamePattern::parse("infra/*")
        .unwrap()
        .matches("infrastructure"));
    assert!(NamePattern::parse("*").unwrap().matches("x"));
    assert!(!NamePattern::parse("main").unwrap().matches("main2"));
    for bad in ["", "a*b", "*a", "a b"] {
        assert!(NamePattern::parse(bad).is_err(), "{bad:?}");
    }
}
