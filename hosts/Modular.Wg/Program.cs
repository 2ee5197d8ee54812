using System.Diagnostics;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Modular.WireGuard.Conn;
using Modular.WireGuard.Device;
using Modular.WireGuard.Tun;
using Modular.WireGuard.Uapi;
using Modular.Wg;

// modular-wg: the in-process WireGuard as a drop-in for wireguard-go's command line.
//   modular-wg [-f|--foreground] <interface>
// creates the TUN and the UAPI socket /var/run/wireguard/<interface>.sock and serves until
// the interface is deleted or SIGTERM/SIGINT. Without -f it starts itself in the background
// and exits 0 once the interface exists, as wireguard-go does (so wg-quick can use it through
// WG_QUICK_USERSPACE_IMPLEMENTATION=modular-wg). LOG_LEVEL=verbose|error|silent.
// TEST ONLY: MODULAR_WG_TEST_TIME_SCALE=N runs the device's clock N times faster (protocol timers,
// handshake timestamps, reported handshake times), so interop tests can watch rekeys happen.
const int DefaultMtu = 1420;
const string TimeScaleVariable = "MODULAR_WG_TEST_TIME_SCALE";

var foreground = false;
string? interfaceName = null;
foreach (var arg in args)
{
    switch (arg)
    {
        case "-f" or "--foreground":
            foreground = true;
            break;
        case "--version" or "-v":
            Console.WriteLine($"modular-wg v{typeof(WgDevice).Assembly.GetName().Version}");
            return 0;
        case "-h" or "--help":
            PrintUsage();
            return 0;
        default:
            if (arg.StartsWith('-') || interfaceName is not null)
            {
                PrintUsage();
                return 2;
            }

            interfaceName = arg;
            break;
    }
}

if (interfaceName is null)
{
    PrintUsage();
    return 2;
}

try
{
    LinuxTun.ValidateInterfaceName(interfaceName);
}
catch (ArgumentException e)
{
    Console.Error.WriteLine($"modular-wg: {e.Message}");
    return 1;
}

if (UapiServer.IsInUse(UapiServer.PathFor(interfaceName)))
{
    Console.Error.WriteLine($"modular-wg: {interfaceName} is already served by another process ({UapiServer.PathFor(interfaceName)})");
    return 1;
}

if (!foreground)
{
    return Daemonize(interfaceName);
}

var loggerFactory = new StderrLoggerFactory(interfaceName, StderrLoggerFactory.FromEnvironment(Environment.GetEnvironmentVariable("LOG_LEVEL")));
var logger = loggerFactory.CreateLogger("modular-wg");
TimeProvider clock = TimeProvider.System;
var timeScale = Environment.GetEnvironmentVariable(TimeScaleVariable);
if (!string.IsNullOrEmpty(timeScale))
{
    if (!double.TryParse(timeScale, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var scale) || !(scale >= 1) || double.IsInfinity(scale))
    {
        logger.LogError("{Variable} must be a number of at least 1, not '{Value}'", TimeScaleVariable, timeScale);
        return 1;
    }

    clock = new ScaledTimeProvider(TimeProvider.System, scale);

    // Written whatever LOG_LEVEL says: a scaled clock must never go unnoticed in a real deployment.
    Console.Error.WriteLine($"modular-wg: WARNING: {TimeScaleVariable}={scale}: TEST-ONLY clock running {scale}x faster; never use this in production");
}

LinuxTun tun;
try
{
    tun = LinuxTun.Create(interfaceName, DefaultMtu);
}
catch (Exception e) when (e is IOException or ArgumentException)
{
    logger.LogError("Failed to create TUN device: {Reason}", e.Message);
    return 1;
}

var stopped = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
using var device = new WgDevice(tun, new UdpBind(), loggerFactory, clock);
device.Closed += (_, _) => stopped.TrySetResult();
UapiServer uapi;
try
{
    uapi = UapiServer.Start(UapiServer.PathFor(interfaceName), device, logger);
}
catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Net.Sockets.SocketException)
{
    logger.LogError("Failed to listen on UAPI socket: {Reason}", e.Message);
    return 1;
}

await using (uapi)
{
    // The device serves from the start, like wireguard-go; `wg set listen-port` rebinds.
    device.Up();
    logger.LogDebug("Device started (TUN offloads {Offloads})", tun.OffloadsEnabled ? "on" : "off");
    using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context => { context.Cancel = true; stopped.TrySetResult(); });
    using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, context => { context.Cancel = true; stopped.TrySetResult(); });

    // The TUN read loop ends when the link is deleted; the check below also covers a device that has not read yet.
    while (!stopped.Task.IsCompleted)
    {
        await Task.WhenAny(stopped.Task, Task.Delay(TimeSpan.FromSeconds(1)));
        if (!Directory.Exists($"/sys/class/net/{interfaceName}"))
        {
            stopped.TrySetResult();
        }
    }

    logger.LogDebug("Shutting down");
}

return 0;

static void PrintUsage()
    => Console.Error.WriteLine("Usage: modular-wg [-f/--foreground] INTERFACE-NAME");

// Re-runs this program detached (new session) with -f, then waits until the interface and its UAPI
// socket exist, so callers such as wg-quick can configure it right away. As with wireguard-go, the
// background process keeps our stdout/stderr only when LOG_LEVEL asks for logs.
static int Daemonize(string interfaceName)
{
    var self = Environment.ProcessPath ?? throw new InvalidOperationException("cannot find my own executable");
    var logLevel = Environment.GetEnvironmentVariable("LOG_LEVEL");
    var keepOutput = !string.IsNullOrEmpty(logLevel) && logLevel != "silent";
    var psi = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
    psi.ArgumentList.Add("-c");
    psi.ArgumentList.Add(keepOutput
        ? "exec setsid -f \"$0\" -f \"$1\" </dev/null"
        : "exec setsid -f \"$0\" -f \"$1\" </dev/null >/dev/null 2>&1");
    psi.ArgumentList.Add(self);
    psi.ArgumentList.Add(interfaceName);
    using (var launcher = Process.Start(psi) ?? throw new IOException("cannot start the background process"))
    {
        launcher.WaitForExit();
    }

    var socket = UapiServer.PathFor(interfaceName);
    var deadline = Stopwatch.StartNew();
    while (deadline.Elapsed < TimeSpan.FromSeconds(15))
    {
        if (File.Exists(socket) && Directory.Exists($"/sys/class/net/{interfaceName}"))
        {
            return 0;
        }

        Thread.Sleep(50);
    }

    Console.Error.WriteLine($"modular-wg: {interfaceName} did not come up (run with -f to see why)");
    return 1;
}
