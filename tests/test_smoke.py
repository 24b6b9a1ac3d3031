def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.get_json() == {"status": "ok"}


def test_login_and_device_me(app, make_user, login, link_device, client):
    uid, email, pw = make_user()
    s = login(email, pw)
    pk, token = link_device(uid)
    r = client.get("/api/v1/device/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["device"]["id"] == "printer-0001"
    r = s.delete(f"/api/v1/devices/{pk}")
    assert r.status_code == 200, r.get_json()
    r = client.get("/api/v1/device/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and r.get_json()["error"] == "invalid_token"
