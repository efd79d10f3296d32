"""Regenerate tests/data/asv_results/ by running asv on tests/data/asv_fixture/.

    python tests/data/make_asv_results.py [DEST]      (default: tests/data/asv_results)

Copies the fixture project into a temporary git repository, registers a machine "fixture"
under a temporary HOME (so ~/.asv-machine.json is not touched) and runs
``asv run --python=same --quick --set-commit-hash HEAD``. Takes 10-30 s. tests/test_analysis.py
calls ``generate`` itself when SPARSEADV_TEST_ASV=1.
"""
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def generate(dest):
    """Run asv on the fixture; copy its results directory to ``dest``; return ``dest``."""
    work = tempfile.mkdtemp(prefix="sparseadv-asv-fixture-")
    try:
        proj = os.path.join(work, "proj")
        shutil.copytree(os.path.join(HERE, "asv_fixture"), proj)
        env = dict(os.environ, HOME=work, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
                   GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")

        def run(*cmd):
            subprocess.run(cmd, cwd=proj, env=env, check=True, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)

        run("git", "init", "-q", ".")
        run("git", "add", "-A")
        run("git", "commit", "-q", "-m", "fixture")
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=proj, env=env, check=True,
                              stdout=subprocess.PIPE, text=True).stdout.strip()
        run(sys.executable, "-m", "asv", "machine", "--yes", "--machine", "fixture")
        run(sys.executable, "-m", "asv", "run", "--python=same", "--quick", "--machine",
            "fixture", "--set-commit-hash", head, "--show-stderr")
        if os.path.exists(dest):
            shutil.rmtree(dest)
        shutil.copytree(os.path.join(proj, "results"), dest)
        return dest
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    print(generate(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "asv_results")))
