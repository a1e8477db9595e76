"""Background tasks: answer first, then do the follow-up work in the same request.

Run it as a program: it signs a user up through the in-process test client, which (like a
server) returns once the background tasks have run.
"""

import trio

from trionet.asgi import (
    ASGIApplication,
    BackgroundTask,
    BackgroundTasks,
    Request,
    Response,
    TestClient,
)

app = ASGIApplication()
outbox: list[str] = []
audit_log: list[str] = []


async def send_welcome(email: str) -> None:
    await trio.sleep(0.01)  # an SMTP exchange, say
    outbox.append(f"welcome mail to {email}")


def write_audit(line: str) -> None:  # a blocking function: it runs on a worker thread
    audit_log.append(line)


@app.route("/signup", methods=["POST"])
async def signup(request: Request) -> Response:
    data = await request.json()
    tasks = BackgroundTasks()
    tasks.add_task(send_welcome, data["email"])
    tasks.add_task(write_audit, f"signup {data['email']}")
    return Response.json({"ok": True}, status_code=201, background=tasks)


@app.route("/ping")
async def ping(request: Request) -> Response:
    return Response.text("pong", background=BackgroundTask(write_audit, "pinged"))


async def main() -> None:
    async with TestClient(app) as client:
        response = await client.post("/signup", json={"email": "ada@example.com"})
        print(response.status_code, response.json())
        await client.get("/ping")
    print(outbox, audit_log)
    assert outbox == ["welcome mail to ada@example.com"]
    assert audit_log == ["signup ada@example.com", "pinged"]


if __name__ == "__main__":
    trio.run(main)
