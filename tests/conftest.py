import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
# Under pytest-xdist each worker is one process per core: one intra-op thread each, not two.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))

from timm_reference import import_timm  # noqa: E402


@pytest.fixture(scope="session")
def timm():
    module = import_timm()
    if module is None:
        if os.environ.get("CI"):
            pytest.fail("timm==1.0.31 is required in CI (pip install --no-deps timm==1.0.31)")
        pytest.skip("timm==1.0.31 not installed")
    return module


# --- test tiers (the markers are registered in pyproject.toml) ----------------------------------------------
#
# Every test carries exactly one tier, plus `slow` when it takes more than ~20 s on the 2-core CI machine
# (measured with --durations; a module fixture that costs that much makes every test that needs it slow):
#   unit         pure Python: no export, lowering or runtime; the whole tier runs in seconds (`-m unit`)
#   integration  compiles, exports, lowers, or runs artifacts in the real runtimes
#   emulated     drives an emulated far end: the adb phone (tests/emulators/adbd.py), the serial agent on ptys
# Files we own set their tier with a module-level `pytestmark` (or per test where a file mixes tiers). The files
# below belong to other owners and carry no tier markers; their tiers are set here, by file, with the tests
# that differ from the file's tier named (a renamed test falls back to the file's tier).
TIERS = ("unit", "integration", "emulated")
_TIERS_BY_FILE = {
    "test_serial.py": ("emulated", {"unit": {
        "test_crc_check_values_match_the_spec", "test_worked_example_in_the_spec_is_what_we_send",
        "test_decoder_resyncs_after_garbage_truncation_and_damage",
        "test_decoder_rejects_a_damaged_header_at_once_and_a_too_long_frame", "test_payload_layouts_are_checked",
        "test_bad_lines_are_clear_errors"}}),
    "test_backend_contract.py": ("integration", {"unit": {
        "test_a_profile_naming_an_unregistered_backend_is_refused",
        "test_a_plugin_that_cannot_be_imported_is_a_clear_error"}}),
    "test_model_api.py": ("unit", {"integration": {"test_bridge_module_is_found_in_the_exported_deploy_form"}}),
}
_SLOW_BY_FILE = {
    "test_backend_contract.py": {"test_every_builtin_backend_lowers_loads_verifies_and_profiles",
                                 "test_a_backend_defined_in_tests_runs_every_command"},
}


@pytest.fixture(autouse=True)
def _unit_tests_run_on_one_thread(request):
    """Unit tests run small tensors: a second intra-op thread gains nothing there, and on a shared machine it made
    `-m unit` (one process, two threads) ~10x slower (every op waits until both threads are scheduled)."""
    if request.node.get_closest_marker("unit") is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        file = item.path.name
        if file not in _TIERS_BY_FILE:
            continue
        name = getattr(item, "originalname", item.name)
        default, others = _TIERS_BY_FILE[file]
        item.add_marker(next((tier for tier, names in others.items() if name in names), default))
        if name in _SLOW_BY_FILE.get(file, ()):
            item.add_marker("slow")


def pytest_runtest_setup(item):
    tiers = sorted({mark.name for mark in item.iter_markers() if mark.name in TIERS})
    if len(tiers) != 1:
        pytest.fail(f"{item.nodeid} must carry exactly one tier marker of {', '.join(TIERS)}; it has "
                    f"{', '.join(tiers) or 'none'} (set `pytestmark` in its file, or mark the test)", pytrace=False)
