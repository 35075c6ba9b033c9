"""deploy/k8s and deploy/compose-router.yaml, checked offline: every Kubernetes
object against the API's schema (kubernetes-validate, strict), the YAML linted
(yamllint), and the pieces wired together: each router finds its pool by the
pool's label and pins sessions, the fronts talk to the routers' Services."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from yamllint import config as yamllint_config
from yamllint import linter

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
KUBERNETES_VERSION = "1.37.0"  # the newest schemas kubernetes-validate 1.37.0 ships
LINT = yamllint_config.YamlLintConfig("{extends: default, rules: {line-length: {max: 120}, document-start: disable, "
                                      "truthy: {check-keys: false}}}")


def objects() -> dict[tuple[str, str], dict]:
    found = {}
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def container(deployment: dict) -> dict:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return only


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_object_passes_the_kubernetes_schema(path):
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("path", [*MANIFESTS, DEPLOY / "compose-router.yaml"], ids=lambda p: p.name)
def test_yaml_lints_clean(path):
    problems = list(linter.run(path.read_text(), LINT, str(path)))
    assert not problems, [str(p) for p in problems]


def test_each_pool_has_a_session_pinning_router_that_finds_it_by_label():
    found = objects()
    for pool in ("policy", "prm"):
        pods = found[("Deployment", f"openr-{pool}")]["spec"]["template"]["metadata"]["labels"]
        command = container(found[("Deployment", f"openr-{pool}-router")])["command"]
        key, _, value = flag(command, "--selector").partition("=")
        assert pods[key] == value
        assert flag(command, "--policy") == "consistent_hash" and "--service-discovery" in command
        assert found[("Deployment", f"openr-{pool}-router")]["spec"]["template"]["spec"]["serviceAccountName"] == \
            found[("RoleBinding", "openr-router")]["subjects"][0]["name"]
    assert "--enable-prefix-caching" in container(found[("Deployment", "openr-policy")])["args"]


def test_the_fronts_use_the_routers_and_send_the_session_header():
    found = objects()
    command = container(found[("Deployment", "openr-serve")])["command"]
    assert command[:4] == ["openr", "serve", "--engine", "openai"]
    for flag_name, router in (("--model", "openr-policy-router"), ("--prm", "openr-prm-router")):
        port = found[("Service", router)]["spec"]["ports"][0]["port"]
        assert flag(command, flag_name).startswith(f"http://{router}:{port}")
    assert flag(command, "--session-header") == "x-session-id"


def test_compose_puts_two_fronts_on_a_router_over_two_policy_replicas():
    services = yaml.safe_load((DEPLOY / "compose-router.yaml").read_text())["services"]
    router = services["router"]["command"]
    port = flag(router, "--port")
    workers = router[router.index("--worker-urls") + 1: router.index("--prometheus-host")]
    assert flag(router, "--policy") == "consistent_hash"
    assert workers == [f"http://policy-{i}:{flag(services[f'policy-{i}']['command'], '--port')}" for i in (0, 1)]
    for front in ("openr-a", "openr-b"):
        assert flag(services[front]["command"], "--model") == f"http://router:{port}/v1"
    assert "--enable-prefix-caching" in services["policy-0"]["command"]
