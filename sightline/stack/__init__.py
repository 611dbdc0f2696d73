"""The local stack: an Apache Kafka broker (KRaft, from Maven Central jars), the
project's topics, and the Feast repo, all under the settings' data directory.

In profile ``prod`` (or whenever ``kafka.bootstrap`` is set) no broker is started;
the same topic and Feast set-up runs against the external services.
"""

from sightline.stack._kafka import KafkaStackError, LocalKafka, kafka_bootstrap
from sightline.stack._topics import TopicSpec, ensure_topics, project_topics

__all__ = ["KafkaStackError", "LocalKafka", "TopicSpec", "ensure_topics", "kafka_bootstrap", "project_topics"]
