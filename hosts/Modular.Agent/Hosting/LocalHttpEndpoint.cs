using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging;
using Modular.Core.Status;

namespace Modular.Agent.Hosting;

/// <summary>
/// What the daemon's local HTTP endpoints (the web UI, the Prometheus endpoint) share: a slim Kestrel app on one
/// address, HTTP/1.1 only, and a start that never stops the VPN. An endpoint that cannot listen (the port is taken,
/// the address is not this host's) is a warning in the log and in status (<see cref="EndpointStatus.Warning"/>);
/// status shows it serving only while it listens.
/// </summary>
internal static class LocalHttpEndpoint
{
    /// <summary>A builder for an app listening on <paramref name="endpoint"/> only, with no logging of its own.</summary>
    public static WebApplicationBuilder CreateBuilder(IPEndPoint endpoint, long maxRequestBodySize)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [], ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.Listen(endpoint, l => l.Protocols = HttpProtocols.Http1);
            kestrel.AddServerHeader = false;
            kestrel.Limits.MaxRequestBodySize = maxRequestBodySize;
        });
        return builder;
    }

    /// <summary>
    /// Starts <paramref name="app"/>; null once it listens, else why not (the app is disposed then).
    /// <paramref name="whenTaken"/> is the warning when another program holds the port (with what to do about it).
    /// </summary>
    public static async Task<string?> StartAsync(WebApplication app, string listen, string whenTaken, CancellationToken cancellationToken)
    {
        try
        {
            await app.StartAsync(cancellationToken);
            return null;
        }
        catch (IOException e)
        {
            await app.DisposeAsync();
            // Kestrel reports a taken port as an IOException around AddressInUseException.
            return e.InnerException is Microsoft.AspNetCore.Connections.AddressInUseException
                ? whenTaken
                : $"cannot listen on {listen}: {e.Message}";
        }
    }
}
