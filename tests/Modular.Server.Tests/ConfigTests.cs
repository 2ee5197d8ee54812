using Modular.Server.Config;

namespace Modular.Server.Tests;

public sealed class ConfigTests
{
    [Fact]
    public void Empty_file_gives_the_documented_defaults()
    {
        var c = ServerConfigLoader.Parse("");
        Assert.Equal("0.0.0.0:33073", c.Listen);
        Assert.Equal(["flow", "management", "relay", "signal", "stun"], c.Components.Order(StringComparer.Ordinal));
        Assert.Equal("/var/lib/modular-server", c.DataDir);
        Assert.Equal("sqlite", c.Store.Kind);
        Assert.Equal("0.0.0.0:33080", c.RelayListen);
        Assert.Equal("0.0.0.0:3478", c.StunListen);
        Assert.False(c.Tls.Enabled);
        Assert.Equal("modular.internal", c.Account.DnsDomain);
        Assert.False(c.Account.LazyConnections);
        Assert.Equal("", c.MetricsListen); // no Prometheus endpoint unless asked for
    }

    [Fact]
    public void A_bad_metrics_address_is_an_error_at_its_line()
        => Assert.StartsWith("server.toml:3:", Assert.Throws<ConfigException>(() => ServerConfigLoader.Parse("listen = \"0.0.0.0:33073\"\n\nmetrics = { listen = \"nowhere\" }")).Message, StringComparison.Ordinal);

    [Fact]
    public void A_metrics_address_is_taken_as_written()
    {
        Assert.Equal("127.0.0.1:9100", ServerConfigLoader.Parse("metrics = { listen = \"127.0.0.1:9100\" }").MetricsListen);
        Assert.Equal("[::1]:9100", ServerConfigLoader.Parse("[metrics]\nlisten = \"[::1]:9100\"").MetricsListen);
        Assert.Equal("", ServerConfigLoader.Parse("metrics = { listen = \"\" }").MetricsListen);
    }

    [Fact]
    public void The_design_example_parses()
    {
        var c = ServerConfigLoader.Parse("""
            listen     = "0.0.0.0:33073"
            components = ["management", "signal"]
            public_url = { signal = "https://s.example:443", relay = "", stun = "" }
            data_dir   = "/tmp/x"
            store      = { kind = "sqlite" }
            relay      = { listen = "0.0.0.0:33080" }
            stun       = { listen = "0.0.0.0:3478" }
            redis_url  = ""
            tls        = { cert = "", key = "" }

            [account]
            dns_domain       = "corp.internal"
            lazy_connections = true
            flows            = { enabled = true, collect_dns = false, collect_exit_node = false }
            rosenpass        = { enabled = true, permissive = true }
            psk              = ""
            peer_login_expiration = "7d"
            """);
        Assert.Equal(["management", "signal"], c.Components.Order(StringComparer.Ordinal));
        Assert.Equal("https://s.example:443", c.PublicUrl.Signal);
        Assert.Equal("corp.internal", c.Account.DnsDomain);
        Assert.True(c.Account.LazyConnections);
        Assert.True(c.Account.Flows.Enabled);
        Assert.True(c.Account.Rosenpass.Permissive);
        Assert.Equal(TimeSpan.FromDays(7), c.Account.PeerLoginExpiration);
        Assert.True(c.Runs("signal"));
        Assert.False(c.Runs("relay"));
    }

    [Fact]
    public void Flow_retention_and_redis_url_parse_and_the_password_never_shows()
    {
        Assert.Equal(TimeSpan.FromDays(7), ServerConfigLoader.Parse("").Account.Flows.Retention);
        var c = ServerConfigLoader.Parse("redis_url = \"redis://:s3cret@10.0.0.5:6380/2\"\n[account]\nflows = { enabled = true, retention = \"36h\" }");
        Assert.Equal(TimeSpan.FromHours(36), c.Account.Flows.Retention);
        Assert.True(RedisUrl.TryParse(c.RedisUrl, out var url, out _));
        Assert.Equal(new RedisUrl("10.0.0.5", 6380, "s3cret", 2, false), url);
        Assert.Equal("10.0.0.5:6380/2", url!.ToString());
        Assert.True(RedisUrl.TryParse("rediss://cache.example", out var tls, out _));
        Assert.Equal(new RedisUrl("cache.example", RedisUrl.DefaultPort, "", 0, true), tls);
    }

    [Theory]
    [InlineData("listen = 33073", "server.toml:1:1: key 'listen': expected a string, got an integer")]
    [InlineData("\n\nbogus = true", "server.toml:3:1: unknown key 'bogus'")]
    [InlineData("[account]\nlazy_connections = \"yes\"", "server.toml:2:1: key 'account.lazy_connections': expected true or false, got a string")]
    [InlineData("relay = { listen = \"nowhere\" }", "key 'relay.listen': expected an address and port")]
    [InlineData("components = [\"management\", \"dns\"]", "each entry must be one of")]
    [InlineData("\nmetrics = { listen = \"localhost:9100\" }", "key 'metrics.listen': expected an address and port such as 0.0.0.0:9100, got 'localhost:9100'")]
    [InlineData("metrics = { listen = \"127.0.0.1:0\" }", "key 'metrics.listen': expected an address and port")]
    [InlineData("metrics = { listen = \"127.0.0.1:9100\", path = \"/m\" }", "unknown key 'metrics.path'")]
    [InlineData("[account]\nflows = { enabled = true, colour = 1 }", "unknown key 'account.flows.colour'")]
    [InlineData("store = { kind = \"mysql\" }", "key 'store.kind': expected one of sqlite, postgres")]
    [InlineData("tls = { cert = \"/a.pem\" }", "give both 'cert' and 'key'")]
    [InlineData("[account]\npsk = \"short\"", "key 'account.psk'")]
    [InlineData("[account]\npeer_login_expiration = \"soon\"", "expected a duration")]
    [InlineData("[account]\nflows = { retention = \"a week\" }", "key 'account.flows.retention': expected a duration")]
    [InlineData("[account]\nflows = { retention = \"0s\" }", "key 'account.flows.retention': must be longer than zero")]
    [InlineData("redis_url = \"localhost:6379\"", "key 'redis_url': expected redis://")]
    [InlineData("redis_url = \"redis://127.0.0.1:6379/99\"", "key 'redis_url': the path must be a database number")]
    [InlineData("listen = ", "server.toml:1:")]
    [InlineData("listen = \"a:1\"\nlisten = \"b:2\"", "server.toml:2:1: The key `listen`")]
    public void Mistakes_are_errors_with_position_and_key(string toml, string expected)
    {
        var e = Assert.Throws<ConfigException>(() => ServerConfigLoader.Parse(toml));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }
}
