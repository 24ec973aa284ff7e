"""The round service: collects personalized v heads over MQTT, averages them (FedAvg) and publishes the signed central v."""
