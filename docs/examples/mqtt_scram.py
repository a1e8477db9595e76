"""SCRAM-SHA-256 over MQTT 5 enhanced authentication, and a re-authentication.

Run: ``python mqtt_scram.py [URL USER PASSWORD]``; without them it starts a private mosquitto
with trionet's test plugin (needs gcc, mosquitto-dev, libmosquitto-dev and libssl-dev).
"""

import sys

import trio

from trionet.mqtt import MQTTAuthError, ScramAuthenticator, open_mqtt_client


async def main(url: str, user: str, password: str) -> None:
    async with open_mqtt_client(
        url,
        protocol=5,  # AUTH packets are MQTT 5
        authenticator=ScramAuthenticator(user, password),  # hash="SHA-512" too
        # use TLS (mqtts://) for a broker elsewhere; the exchange runs over TLS then
        allow_insecure_auth=url.startswith("mqtt://127.0.0.1"),
    ) as client:
        # connected: the broker checked our proof, and we checked its signature
        await client.publish("sensors/door", "open", qos=1)
        await client.reauthenticate()  # the same exchange again, on the open connection
        print("authenticated twice")
    try:
        async with open_mqtt_client(
            url, protocol=5, authenticator=ScramAuthenticator(user, "guessed"),
            allow_insecure_auth=url.startswith("mqtt://127.0.0.1"),
        ):
            pass
    except MQTTAuthError as exc:
        print(f"refused: reason code 0x{exc.reason_code:02x}")


if __name__ == "__main__":
    if len(sys.argv) > 3:
        trio.run(main, *sys.argv[1:4])
    else:  # no broker given: use a private, throwaway mosquitto with the test plugin
        from trionet.testing import MosquittoServer

        with MosquittoServer(auth_plugin=True) as broker:
            info = broker.info
            trio.run(main, f"mqtt://{info.host}:{info.ext_auth_port}", info.scram_user,
                     info.scram_password)
