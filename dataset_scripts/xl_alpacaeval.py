"""XL-AlpacaEval builder (thin shell; the logic lives in ``xl_suite.builders``).

datasets>=4 no longer runs loading scripts: use ``xl_suite.load_xl_suite("xl-alpacaeval-de")`` or instantiate
``XlAlpacaEval(config_name="xl-alpacaeval-de", source=...)`` and call ``download_and_prepare()``.
"""

from xl_suite.builders import XlAlpacaEval, XlSuiteConfig  # noqa: F401
from xl_suite.constants import CITATION, LICENSE_BENCHMARK, PAPER_URL  # noqa: F401
