"""The foundation every stage stands on, importing none of them: the error root, the settings object,
Postgres access, YAML configs and the Kafka connection."""

from core.exceptions import FlywheelError
from core.kafka import KafkaConnection
from core.settings import FlywheelSettings, Topics

__all__ = ["FlywheelError", "FlywheelSettings", "KafkaConnection", "Topics", "__version__"]

__version__ = "0.1.0"
