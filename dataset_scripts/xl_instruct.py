"""XL-Instruct builder (thin shell; the logic lives in ``xl_suite.builders``).

Use ``xl_suite.load_xl_suite("xl-instruct-mt", source=FOLDER)`` or ``XlInstruct(config_name=..., source=...)``.
"""

from xl_suite.builders import XlInstruct, XlSuiteConfig  # noqa: F401
from xl_suite.constants import CITATION, LICENSE_INSTRUCT, PAPER_URL  # noqa: F401
