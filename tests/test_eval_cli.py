

def test_machine_records_the_commit_named_for_a_copy_without_git(monkeypatch):
    """Results made on a GPU machine from a copy of the tree carry the commit the copy was made at;
    git's own answer there ("HEAD", or an error) is not a commit and is not recorded as one."""
    from memit.eval.run import machine

    monkeypatch.setenv("MEMIT_COMMIT", "a" * 40)
    assert machine()["commit"] == "a" * 40
    monkeypatch.setenv("MEMIT_COMMIT", "HEAD")
    assert machine()["commit"] is None
    monkeypatch.delenv("MEMIT_COMMIT")
    commit = machine()["commit"]
    assert commit is None or len(commit) == 40
