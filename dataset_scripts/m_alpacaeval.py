"""m-AlpacaEval builder (thin shell; the logic lives in ``xl_suite.builders``).

Use ``xl_suite.load_xl_suite("m-alpacaeval-de", source=FOLDER)`` or ``MAlpacaEval(config_name=..., source=...)``.
"""

from xl_suite.builders import MAlpacaEval, XlSuiteConfig  # noqa: F401
from xl_suite.constants import CITATION, LICENSE_BENCHMARK, PAPER_URL  # noqa: F401
