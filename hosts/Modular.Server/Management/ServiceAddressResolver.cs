using Google.Protobuf;
using Microsoft.AspNetCore.Http;
using Modular.Abstractions.WireGuard;
using Modular.Control.Management;
using Modular.Control.Relay;
using Modular.Server.Config;
using Modular.Server.Hosting;
using Modular.Server.Relay;
using Modular.Server.Stun;

namespace Modular.Server.Management;

/// <summary>
/// Tells an agent where signal, relay and STUN are: public_url when configured, else the host the agent
/// used to reach management with each component's port. Issues the short-lived relay credentials too (token and
/// per-token secret; both only ever inside sealed replies).
/// </summary>
public sealed class ServiceAddressResolver
{
    public static readonly TimeSpan RelayTokenLifetime = TimeSpan.FromHours(12);

    /// <summary>
    /// How long after issuing the Sync stream sends fresh relay credentials: half the lifetime, so an agent that
    /// misses one refresh (a reconnecting stream) still has hours left before its live relay bindings would expire.
    /// </summary>
    public static readonly TimeSpan RelayTokenRefresh = RelayTokenLifetime / 2;

    private readonly ServerConfig _config;
    private readonly ServerSecrets _secrets;
    private readonly TimeProvider _time;
    private readonly RelayServer? _relay;
    private readonly StunServer? _stun;

    public ServiceAddressResolver(ServerConfig config, ServerSecrets secrets, TimeProvider time, IServiceProvider services)
    {
        _config = config;
        _secrets = secrets;
        _time = time;
        _relay = services.GetService(typeof(RelayServer)) as RelayServer;
        _stun = services.GetService(typeof(StunServer)) as StunServer;
    }

    public ServiceAddresses Resolve(HttpContext? http, WgKey peer)
    {
        var host = http?.Request.Host.Host is { Length: > 0 } h ? h : "127.0.0.1";
        if (host.Contains(':', StringComparison.Ordinal) && !host.StartsWith('['))
        {
            host = $"[{host}]";
        }

        var scheme = _config.Tls.Enabled ? "https" : "http";
        var grpcPort = http?.Request.Host.Port ?? PortOf(_config.Listen);
        var expires = _time.GetUtcNow() + RelayTokenLifetime;
        var addresses = new ServiceAddresses
        {
            SignalUrl = _config.PublicUrl.Signal.Length > 0 ? _config.PublicUrl.Signal
                : _config.Runs("signal") ? $"{scheme}://{host}:{grpcPort}" : "",
            RelayAddress = _config.PublicUrl.Relay.Length > 0 ? _config.PublicUrl.Relay
                : _config.Runs("relay") ? $"{host}:{_relay?.LocalEndPoint?.Port ?? PortOf(_config.RelayListen)}" : "",
            StunAddress = _config.PublicUrl.Stun.Length > 0 ? _config.PublicUrl.Stun
                : _config.Runs("stun") ? $"{host}:{_stun?.LocalEndPoint?.Port ?? PortOf(_config.StunListen)}" : "",
            RelayTokenExpiresUnix = expires.ToUnixTimeSeconds(),
        };
        addresses.RelayToken = ByteString.CopyFrom(RelayToken.Issue(_secrets.RelaySecret, peer, expires));
        addresses.RelaySecret = ByteString.CopyFrom(RelayToken.DeriveSecret(_secrets.RelaySecret, peer, expires.ToUnixTimeSeconds()));
        return addresses;
    }

    private static int PortOf(string endpoint) => System.Net.IPEndPoint.TryParse(endpoint, out var ep) ? ep.Port : 0;
}
