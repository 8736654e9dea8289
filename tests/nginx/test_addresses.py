"""Config addresses to the forms nginx writes in $upstream_addr."""

from nginx_canary.nginx.addresses import logged_forms, system_resolver


def fake_resolver(table):
    def resolve(host, port):
        return table.get(host, [])
    return resolve


def test_literals_and_default_port():
    assert logged_forms("10.0.0.12:8080") == {"10.0.0.12:8080"}
    assert logged_forms("10.0.0.12") == {"10.0.0.12:80"}
    assert logged_forms("[::1]:8080") == {"[::1]:8080"}
    assert logged_forms("[::1]") == {"[::1]:80"}
    assert logged_forms("unix:/run/app.sock") == {"unix:/run/app.sock"}


def test_host_names_resolve_to_every_address():
    resolve = fake_resolver({"app-v2": ["10.0.0.7", "10.0.0.8"], "v6only": ["2001:db8::1"]})
    assert logged_forms("app-v2:8080", resolve) == {"10.0.0.7:8080", "10.0.0.8:8080"}
    assert logged_forms("app-v2", resolve) == {"10.0.0.7:80", "10.0.0.8:80"}
    assert logged_forms("v6only:443", resolve) == {"[2001:db8::1]:443"}
    assert logged_forms("nowhere:1", resolve) == set()


def test_localhost_with_the_system_resolver():
    assert "127.0.0.1:8080" in logged_forms("localhost:8080", system_resolver)
