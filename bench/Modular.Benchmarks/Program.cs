if (args.Length > 0 && args[0] == "wg-throughput")
{
    Modular.Benchmarks.WireGuard.InMemoryThroughput.Run(args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 200_000);
    return;
}

BenchmarkDotNet.Running.BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
