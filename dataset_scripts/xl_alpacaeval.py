"""XL-AlpacaEval builder (thin shell; the logic lives in ``xl_suite.builders``).

datasets>=4 no longer runs loading scripts: use ``xl_suite.load_dataset("xl-alpacaeval-de")`` or instantiate
``XlAlpacaEval(config_name="xl-alpacaeval-de", source=...)`` and call ``download_and_prepare()``.
"""

from xl_suite.builders import _CITATION, _HOMEPAGE, _LICENSE_BENCHMARK, XlAlpacaEval, XlSuiteConfig  # noqa: F401
