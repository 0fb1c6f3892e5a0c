"""What a stored config may name and hold (audioscore.safe_config): which `_target_`s pass, which
interpolations a config read from disk may use, how keys are found and named in refusals, and
which packages a user may add. Tiny dicts and a throwaway user package; nothing is built."""

from __future__ import annotations

import dataclasses
import datetime
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from torch import nn

from audiobase.weights import UserError
from audioscore.safe_config import (
    COMPONENT_MARK,
    COMPONENT_PACKAGES,
    SAFE_RESOLVERS,
    USER_PACKAGES_ENV,
    ComponentPackagesError,
    StoredConfigError,
    UnsafeTargetError,
    UntrustedInputError,
    check_interpolations,
    check_targets,
    component,
    component_packages,
    interpolation_refusal,
    iter_strings,
    iter_targets,
    read_yaml,
    resolve_stored,
)

USER_PKG = "ct_user_components"


@pytest.fixture
def user_pkg(tmp_path, monkeypatch) -> str:
    """A user's package: a marked class and function, unmarked ones, a marked class's subclass."""
    pkg = tmp_path / USER_PKG
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        textwrap.dedent(
            """
            from torch import nn
            from audioscore.safe_config import component

            @component
            class Marked(nn.Module):
                pass

            class Heir(Marked):
                pass

            class Plain(nn.Module):
                pass

            @component
            def build():
                return Marked()

            def helper():
                return None

            def one():
                return None

            one.__config_component__ = 1
            """
        )
    )
    (pkg / "broken.py").write_text("import ct_no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(USER_PACKAGES_ENV, raising=False)
    yield USER_PKG
    for name in [m for m in sys.modules if m == USER_PKG or m.startswith(USER_PKG + ".")]:
        del sys.modules[name]


def refusal(target, packages=None) -> str:
    with pytest.raises(UnsafeTargetError) as err:
        check_targets({"net": {"_target_": target}}, "c.yaml", packages)
    assert (err.value.where, err.value.key, err.value.target) == ("c.yaml", "net._target_", target)
    return err.value.reason


# ---------------------------------------------------------------- errors


def test_errors_are_user_errors_and_value_errors():
    e = StoredConfigError("c.yaml", "net", "bad")
    assert isinstance(e, UntrustedInputError) and isinstance(e, UserError)
    assert isinstance(e, ValueError)
    assert issubclass(ComponentPackagesError, UserError)
    assert issubclass(ComponentPackagesError, ValueError)


def test_stored_config_error_names_the_file_the_key_and_why():
    e = StoredConfigError("c.yaml", "net.x", "is missing")
    assert (e.where, e.key, e.reason) == ("c.yaml", "net.x", "is missing")
    assert str(e) == "c.yaml: refusing net.x: is missing"
    assert str(StoredConfigError("c.yaml", "k", "r", "own message")) == "own message"


def test_unsafe_target_error_names_the_target_and_what_may_be_named():
    e = UnsafeTargetError("c.yaml", "net._target_", "os.system", "outside")
    assert (e.where, e.key, e.reason, e.target) == (
        "c.yaml",
        "net._target_",
        "outside",
        "os.system",
    )
    assert str(e) == (
        "c.yaml: refusing net._target_ = 'os.system': outside (a stored config may only name "
        "nn.Module subclasses or dataclasses defined under audioscore.models / audiobase, "
        "or functions marked @component)"
    )


def test_component_marks_the_function_and_returns_it():
    def f():
        return 1

    assert component(f) is f and getattr(f, COMPONENT_MARK) is True
    assert COMPONENT_MARK == "__config_component__"


# ---------------------------------------------------------------- walking a config


def test_iter_targets_names_every_target_by_its_key_path():
    cfg = {
        "_target_": "top",
        "net": {"enc": {"_target_": "a", "k": 1}, "heads": [{"_target_": "b"}, 3, ("x",)]},
        "tup": ({"_target_": "c"},),
        7: {"_target_": "d"},
    }
    assert list(iter_targets(cfg)) == [
        ("_target_", "top"),
        ("net.enc._target_", "a"),
        ("net.heads[0]._target_", "b"),
        ("tup[0]._target_", "c"),
        ("7._target_", "d"),
    ]


def test_iter_targets_of_a_scalar_is_nothing_and_a_prefix_leads_the_paths():
    assert list(iter_targets("x")) == [] and list(iter_targets(None)) == []
    assert list(iter_targets({"_target_": "a"}, "root")) == [("root._target_", "a")]
    assert list(iter_targets([{"_target_": "a"}], "root")) == [("root[0]._target_", "a")]


def test_iter_strings_yields_keys_and_values_with_their_paths():
    cfg = {"a": "x", 1: {"b": ["y", 2, ("z",)]}, "n": 3}
    assert sorted(iter_strings(cfg)) == sorted(
        [
            ("a", "a", True),
            ("a", "x", False),
            ("1.b", "b", True),
            ("1.b[0]", "y", False),
            ("1.b[2][0]", "z", False),
            ("n", "n", True),
        ]
    )


def test_iter_strings_walks_a_shared_container_once_and_takes_a_prefix():
    shared = {"k": "v"}
    assert sorted(iter_strings({"a": shared, "b": shared})) in (
        sorted([("a", "a", True), ("b", "b", True), ("a.k", "k", True), ("a.k", "v", False)]),
        sorted([("a", "a", True), ("b", "b", True), ("b.k", "k", True), ("b.k", "v", False)]),
    )
    assert list(iter_strings("s", "top")) == [("top", "s", False)]
    assert sorted(iter_strings({"k": "v"}, "top")) == [("top.k", "k", True), ("top.k", "v", False)]


# ---------------------------------------------------------------- interpolations


def test_text_without_an_interpolation_passes_under_any_rule():
    assert interpolation_refusal("$HOME and $ {x}", None) is None
    assert interpolation_refusal("plain", SAFE_RESOLVERS) is None


def test_plain_data_may_hold_no_interpolation_at_all():
    assert interpolation_refusal("${a}", None) == (
        "holds '${', which would be resolved as an OmegaConf interpolation when the config is "
        "built (a stored config is plain data)"
    )


def test_references_and_named_resolvers_pass_when_resolvers_are_given():
    assert interpolation_refusal("${a.b}", SAFE_RESOLVERS) is None
    assert interpolation_refusal("x ${oc.env:HOME} ${now:%Y}", SAFE_RESOLVERS) is None
    assert interpolation_refusal("${oc.select:a,${b}}", SAFE_RESOLVERS) is None


def test_a_resolver_outside_the_set_is_refused_naming_the_allowed_ones():
    assert interpolation_refusal("${oc.create:{}}", {"oc.env", "now"}) == (
        "calls the resolver 'oc.create'; a config read from disk may only call now, oc.env "
        "and reference its own keys"
    )


def test_a_resolver_nested_in_an_allowed_one_is_refused():
    reason = interpolation_refusal("${oc.select:a,${oc.decode:x}}", SAFE_RESOLVERS)
    assert reason is not None and "'oc.decode'" in reason


def test_a_computed_resolver_name_is_refused():
    reason = interpolation_refusal("${${a}:x}", SAFE_RESOLVERS)
    assert reason == "calls a resolver whose name is computed ('${a}')"


def test_a_broken_interpolation_is_refused_as_invalid():
    reason = interpolation_refusal("${a", SAFE_RESOLVERS)
    assert reason is not None and reason.startswith("not a valid interpolation (")


def test_the_safe_resolvers_are_the_documented_ones():
    assert SAFE_RESOLVERS == {"oc.env", "oc.select", "now", "hydra"}


def test_check_interpolations_names_the_value_key_and_lets_allowed_ones_pass():
    check_interpolations({"a": "${b}", "b": "1"}, "c.yaml", SAFE_RESOLVERS)
    with pytest.raises(StoredConfigError) as err:
        check_interpolations({"net": {"x": ["${b}"]}}, "c.yaml")
    assert (err.value.where, err.value.key) == ("c.yaml", "net.x[0]")
    assert err.value.reason.startswith("holds '${'")


def test_keys_may_hold_no_interpolation_even_where_values_may():
    with pytest.raises(StoredConfigError) as err:
        check_interpolations({"net": {"${b}": 1}}, "c.yaml", SAFE_RESOLVERS)
    assert err.value.key == "key net.${b}" and err.value.reason.startswith("holds '${'")


# ---------------------------------------------------------------- reading and resolving


def test_read_yaml_reads_plain_data(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("a: 1\nb: [x, 'é']\n", encoding="utf-8")
    assert read_yaml(path) == {"a": 1, "b": ["x", "é"]}
    assert read_yaml(str(path)) == {"a": 1, "b": ["x", "é"]}


@pytest.mark.parametrize(
    "content", [None, b"a: [1\n", b"\xff\xfe\x00bad", b"!!python/object:os.system {}\n"]
)
def test_read_yaml_refuses_what_it_cannot_read_naming_the_file(tmp_path, content):
    path = tmp_path / "c.yaml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(StoredConfigError) as err:
        read_yaml(path)
    assert (err.value.where, err.value.key) == (str(path), "the file")
    assert err.value.reason.startswith("cannot be read as YAML (")


def test_resolve_stored_resolves_each_key_once_and_returns_it_by_its_dotted_name():
    raw = {
        "sr": 16000,
        "model": {"net": {"_target_": "audiobase.preprocess.Preprocess", "sr": "${sr}"}},
        "name": "${sr}",
    }
    got = resolve_stored(raw, "c.yaml", ["model.net", "sr"])
    assert got == {
        "model.net": {"_target_": "audiobase.preprocess.Preprocess", "sr": 16000},
        "sr": 16000,
    }
    assert isinstance(got["model.net"], dict)


def test_resolve_stored_refuses_what_is_not_a_mapping():
    with pytest.raises(StoredConfigError) as err:
        resolve_stored([1], "c.yaml", ["a"])
    assert (err.value.where, err.value.key, err.value.reason) == (
        "c.yaml",
        "the file",
        "is not a mapping",
    )


def test_resolve_stored_checks_every_string_not_only_the_selected_keys():
    raw = {"a": 1, "other": "${oc.create:{}}"}
    with pytest.raises(StoredConfigError) as err:
        resolve_stored(raw, "c.yaml", ["a"])
    assert (err.value.where, err.value.key) == ("c.yaml", "other")
    assert "'oc.create'" in err.value.reason


def test_resolve_stored_takes_the_allowed_resolvers_from_the_caller():
    raw = {"a": "${oc.env:HOME}"}
    with pytest.raises(StoredConfigError, match="oc.env"):
        resolve_stored(raw, "c.yaml", ["a"], resolvers=())


def test_resolve_stored_refuses_a_config_omegaconf_cannot_hold():
    raw = {"a": datetime.date(2020, 1, 1)}
    with pytest.raises(StoredConfigError) as err:
        resolve_stored(raw, "c.yaml", ["a"])
    assert (err.value.where, err.value.key) == ("c.yaml", "the file")
    assert err.value.reason.startswith("is not a valid config (")


def test_a_missing_key_is_refused_as_missing():
    with pytest.raises(StoredConfigError) as err:
        resolve_stored({"a": {"b": 1}}, "c.yaml", ["a.c"])
    assert (err.value.where, err.value.key, err.value.reason) == ("c.yaml", "a.c", "is missing")
    with pytest.raises(StoredConfigError, match="refusing x: is missing"):
        resolve_stored({"x": None}, "c.yaml", ["x"])


def test_a_key_that_cannot_be_resolved_is_refused_naming_it():
    for raw, key in (({"a": "???"}, "a"), ({"a": {"b": "???"}}, "a"), ({"a": "${nope}"}, "a")):
        with pytest.raises(StoredConfigError) as err:
            resolve_stored(raw, "c.yaml", [key])
        assert (err.value.where, err.value.key) == ("c.yaml", key)
        assert err.value.reason.startswith("cannot be resolved (")


def test_an_escaped_interpolation_left_after_resolving_is_refused():
    with pytest.raises(StoredConfigError) as err:
        resolve_stored({"a": {"b": "\\${oc.create:{}}"}}, "c.yaml", ["a"])
    assert err.value.key == "a.b" and err.value.reason.startswith("holds '${'")


def test_the_selected_keys_targets_are_checked_at_their_dotted_place():
    raw = {"m": {"net": {"_target_": "os.system"}}, "unused": {"_target_": "os.remove"}}
    with pytest.raises(UnsafeTargetError) as err:
        resolve_stored(raw, "c.yaml", ["m.net"])
    assert (err.value.where, err.value.key, err.value.target) == (
        "c.yaml",
        "m.net._target_",
        "os.system",
    )


def test_an_unselected_key_is_not_target_checked():
    raw = {"a": 1, "evil": {"_target_": "os.system"}}
    assert resolve_stored(raw, "c.yaml", ["a"]) == {"a": 1}


# ---------------------------------------------------------------- targets


def test_a_project_dataclass_passes_in_a_list_and_in_an_omegaconf_config():
    check_targets({"pre": [{"_target_": "audiobase.preprocess.Preprocess"}]}, "c.yaml")
    check_targets(OmegaConf.create({"a": {"_target_": "audiobase.preprocess.Preprocess"}}), "x")


def test_an_omegaconf_config_is_taken_unresolved():
    cfg = OmegaConf.create({"a": "${b}", "b": 1})
    with pytest.raises(StoredConfigError) as err:
        check_targets(cfg, "c.yaml")
    assert err.value.key == "a"


def test_a_target_outside_the_packages_is_refused_with_the_way_to_allow_it():
    assert refusal("os.system") == (
        "outside the component packages audioscore.models, audiobase; a class of your own: "
        f"mark it @component and name its package in ${USER_PACKAGES_ENV}"
    )
    assert refusal("audiobasex.thing").startswith("outside the component packages")


def test_a_target_that_is_not_a_string_is_not_a_dotted_name():
    assert refusal(3) == "not a dotted name"


def test_names_are_checked_before_anything_is_imported():
    cfg = {
        "a": {"_target_": "audioscore.models.ct_no_such_module.X"},
        "b": {"_target_": "os.system"},
    }
    with pytest.raises(UnsafeTargetError) as err:
        check_targets(cfg, "c.yaml")
    assert err.value.key == "b._target_"
    assert "audioscore.models.ct_no_such_module" not in sys.modules


def test_a_package_itself_or_a_module_is_not_a_component():
    assert refusal("audiobase") == "a module, not a component"
    assert refusal("audiobase.audio") == "a module, not a component"


def test_stepping_into_another_module_by_attribute_is_refused():
    assert refusal("audiobase.audio.os.system") == (
        "does not resolve inside the project (ValueError: 'os' is the module 'os')"
    )


def test_a_reexported_name_from_elsewhere_is_refused_naming_its_module():
    assert refusal("audiobase.audio.Path") == f"resolves to {Path!r} from 'pathlib'"


def test_an_object_without_a_module_is_refused_as_from_nowhere():
    assert refusal("audiobase.audio.MUQ_SR") == "resolves to 24000 from 'nowhere'"


def test_a_name_that_does_not_resolve_says_why():
    assert refusal("audiobase.audio.no_such_name") == (
        "does not resolve inside the project (AttributeError: module 'audiobase.audio' has no "
        "attribute 'no_such_name')"
    )
    assert refusal("audiobase.not-a-name.X") == (
        "does not resolve inside the project (ValueError: not a dotted name)"
    )


def test_project_classes_must_be_modules_or_dataclasses():
    assert refusal("audiobase.audio.AudioError") == (
        "a class that is neither an nn.Module nor a dataclass"
    )
    check_targets({"n": {"_target_": "audiobase.preprocess.Preprocess"}}, "c.yaml")
    assert dataclasses.is_dataclass(sys.modules["audiobase.preprocess"].Preprocess)


def test_project_functions_must_be_marked():
    assert refusal("audiobase.audio.load_audio") == "a function not marked @component"


def test_a_marked_project_function_passes(monkeypatch):
    import audiobase.audio as audio

    monkeypatch.setattr(audio, "ct_factory", component(lambda: None), raising=False)
    monkeypatch.setattr(audio.ct_factory, "__module__", "audiobase.audio")
    check_targets({"n": {"_target_": "audiobase.audio.ct_factory"}}, "c.yaml")


def test_a_mark_must_be_exactly_true(monkeypatch):
    import audiobase.audio as audio

    def ct_factory():
        return None

    ct_factory.__module__ = "audiobase.audio"
    setattr(ct_factory, COMPONENT_MARK, 1)
    monkeypatch.setattr(audio, "ct_factory", ct_factory, raising=False)
    assert refusal("audiobase.audio.ct_factory") == "a function not marked @component"


def test_a_project_nn_module_passes(monkeypatch):
    import audiobase.audio as audio

    class CtNet(nn.Module):
        pass

    CtNet.__module__ = "audiobase.audio"
    monkeypatch.setattr(audio, "CtNet", CtNet, raising=False)
    check_targets({"n": {"_target_": "audiobase.audio.CtNet"}}, "c.yaml")


def test_another_kind_of_project_object_is_refused_by_its_type(monkeypatch):
    import audiobase.audio as audio

    class Thing:
        __module__ = "audiobase.audio"

    monkeypatch.setattr(audio, "ct_thing", Thing(), raising=False)
    assert refusal("audiobase.audio.ct_thing") == "a Thing, not a component"


# ---------------------------------------------------------------- a user's package


def test_a_users_marked_class_and_function_pass(user_pkg):
    packages = component_packages(user_pkg)
    check_targets({"n": {"_target_": f"{user_pkg}.Marked"}}, "c.yaml", packages)
    check_targets({"n": {"_target_": f"{user_pkg}.build"}}, "c.yaml", packages)


def test_a_users_unmarked_or_inherited_component_is_refused(user_pkg):
    packages = component_packages(user_pkg)
    why = "not marked @component (a user's component must carry the mark itself)"
    for name in ("Heir", "Plain", "helper", "one"):
        assert refusal(f"{user_pkg}.{name}", packages) == why


def test_a_users_package_needs_naming(user_pkg):
    assert refusal(f"{user_pkg}.Marked").startswith("outside the component packages")


def test_the_users_packages_come_from_the_environment(user_pkg, monkeypatch):
    monkeypatch.setenv(USER_PACKAGES_ENV, user_pkg)
    check_targets({"n": {"_target_": f"{user_pkg}.Marked"}}, "c.yaml")


def test_a_users_module_whose_imports_fail_does_not_resolve(user_pkg):
    reason = refusal(f"{user_pkg}.broken.X", component_packages(user_pkg))
    assert reason == (
        "does not resolve inside the project (ModuleNotFoundError: No module named "
        "'ct_no_such_dependency_xyz')"
    )


def test_a_package_that_does_not_exist_does_not_resolve():
    reason = refusal("ct_absent_pkg_xyz.sub.X", component_packages("ct_absent_pkg_xyz"))
    assert (
        reason == "does not resolve inside the project (ImportError: no module 'ct_absent_pkg_xyz')"
    )


def test_a_dotted_package_that_does_not_exist_is_named_whole():
    reason = refusal("audioscore.ct_nothing.X", ("audioscore.ct_nothing",))
    assert reason == (
        "does not resolve inside the project (ImportError: no module 'audioscore.ct_nothing')"
    )


def test_a_selected_key_with_a_space_keeps_it_in_the_key_path():
    raw = {"a b": {"net": {"_target_": "os.system"}}}
    with pytest.raises(UnsafeTargetError) as err:
        resolve_stored(raw, "c.yaml", ["a b.net"])
    assert err.value.key == "a b.net._target_"


def test_a_dotted_user_package_starts_resolving_at_its_own_depth(user_pkg):
    reason = refusal(f"{user_pkg}.broken.X", (f"{user_pkg}.broken",))
    assert "ct_no_such_dependency_xyz" in reason
    assert refusal("audioscore.models.ct_nothing.X").startswith("does not resolve inside")


# ---------------------------------------------------------------- component packages


def test_component_packages_default_to_the_projects_and_the_environment(monkeypatch):
    monkeypatch.delenv(USER_PACKAGES_ENV, raising=False)
    assert component_packages() == COMPONENT_PACKAGES == ("audioscore.models", "audiobase")
    monkeypatch.setenv(USER_PACKAGES_ENV, "lab.models")
    assert component_packages() == ("audioscore.models", "audiobase", "lab.models")
    assert component_packages("") == COMPONENT_PACKAGES
    assert USER_PACKAGES_ENV == "AUDIOSCORE_COMPONENT_PACKAGES"


def test_component_packages_are_comma_separated_trimmed_and_deduplicated():
    assert component_packages(" a , b.c,,a, audiobase ,") == (
        "audioscore.models",
        "audiobase",
        "a",
        "b.c",
    )


@pytest.mark.parametrize("bad", ["my-models", "a..b", "a b", "1pkg"])
def test_a_package_name_that_is_not_dotted_is_refused(bad):
    with pytest.raises(ComponentPackagesError) as err:
        component_packages(f"ok,{bad}")
    assert err.value.value == f"ok,{bad}"
    assert str(err.value) == (
        f"{bad!r} is not a dotted package name (give comma-separated names such as "
        "my_models,lab.components)"
    )


def test_a_bad_package_environment_refuses_every_target(monkeypatch):
    monkeypatch.setenv(USER_PACKAGES_ENV, "bad-name")
    with pytest.raises(UnsafeTargetError) as err:
        check_targets({"n": {"_target_": "audiobase.preprocess.Preprocess"}}, "c.yaml")
    assert (err.value.where, err.value.key, err.value.target) == (
        "c.yaml",
        f"${USER_PACKAGES_ENV}",
        "bad-name",
    )
    assert err.value.reason.startswith("'bad-name' is not a dotted package name")
    assert isinstance(err.value.__cause__, ComponentPackagesError)
