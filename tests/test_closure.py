"""A conftest that wraps one of our fixtures keeps what it depends on in view.

pytest 9.0 prunes a parametrized test's closure to each fixture's closest definition
(pytest-dev/pytest#14248): a ``memory_service(memory_service)`` override then hid
``embedder``, and a run's workload recorded no embedding model, so it was "not judged:
workload changed" against baselines recorded without the override.
"""

from __future__ import annotations

import pytest

CHAIN = '''
import pytest

@pytest.fixture
def leaf():
    return 1

@pytest.fixture
def service(leaf):
    return leaf
'''

WRAPPED = '''
import pytest

@pytest.fixture
def service(service):
    return service + 1
'''

TEST = '''
from pytest_agentmem.closure import fixture_closure

def pytest_generate_tests(metafunc):
    if "x" in metafunc.fixturenames:
        metafunc.parametrize("x", [1, 2])  # a dynamic parametrization: pytest prunes the closure

def test_sees_through_the_override(service, x, request):
    assert service == 2
    assert {"service", "leaf", "x"} <= fixture_closure(request.node)

def test_without_parametrization(service, request):
    assert "leaf" in fixture_closure(request.node)
'''


def test_the_closure_goes_down_the_override_chain(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CHAIN)
    pytester.mkpydir("sub").joinpath("conftest.py").write_text(WRAPPED)
    pytester.path.joinpath("sub", "test_wrapped.py").write_text(TEST)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=3)


def test_a_name_overridden_without_using_itself_drops_the_old_dependencies(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CHAIN)
    pytester.makepyfile('''
        import pytest
        from pytest_agentmem.closure import fixture_closure

        @pytest.fixture
        def service():
            return 5

        def test_replaced(service, request):
            assert "leaf" not in fixture_closure(request.node)
    ''')
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


@pytest.mark.slow
def test_a_wrapped_memory_service_still_records_the_embedding_model(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('''
        import pytest_asyncio

        @pytest_asyncio.fixture
        async def memory_service(memory_service):
            yield memory_service
    ''')
    pytester.makepyfile('''
        import pytest

        @pytest.mark.agentmem_perf
        async def test_workload(perf, memory_service, pytestconfig):
            from pytest_agentmem.session import get_session

            assert perf.workload()["embedding_model"] == str(get_session(pytestconfig).embedding_model)
    ''')
    pytester.runpytest("-p", "no:cacheprovider", "--agentmem-perf").assert_outcomes(passed=1)
