"""The qnn target (:mod:`.target`): :mod:`.ops` its op table, :mod:`.config` the HTP settings,
:mod:`.compile` the graph steps, :mod:`.snpe` the SNPE/QAIRT path."""
from .config import HTP_ARCHS, HtpConfig, htp_config
from .target import QnnTarget

__all__ = ["HTP_ARCHS", "HtpConfig", "QnnTarget", "htp_config"]
