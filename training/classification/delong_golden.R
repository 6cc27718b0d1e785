# Golden values for OsteoScreen's DeLong implementation, computed with R's pROC.
#   Rscript training/classification/delong_golden.R Testing/Data/delong_cases.csv Testing/Data/delong_golden.json
suppressMessages(library(pROC))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
fmt <- function(x) formatC(x, digits = 12, format = "g")
out <- c()
for (s in c("a", "b", "c")) {
  r <- roc(d$y, d[[s]], levels = c(0, 1), direction = "<", quiet = TRUE)
  ci <- ci.auc(r, conf.level = 0.95, method = "delong")
  out <- c(out, sprintf('"%s": {"auc": %s, "ci_low": %s, "ci_high": %s, "var": %s}', s, fmt(ci[2]), fmt(ci[1]), fmt(ci[3]), fmt(var(r, method = "delong"))))
}
for (pair in list(c("a", "b"), c("a", "c"))) {
  r1 <- roc(d$y, d[[pair[1]]], levels = c(0, 1), direction = "<", quiet = TRUE)
  r2 <- roc(d$y, d[[pair[2]]], levels = c(0, 1), direction = "<", quiet = TRUE)
  t <- roc.test(r1, r2, method = "delong", paired = TRUE)
  out <- c(out, sprintf('"%s_vs_%s": {"z": %s, "p": %s}', pair[1], pair[2], fmt(t$statistic), fmt(t$p.value)))
}
cat(sprintf('{"pROC_version": "%s",\n %s}\n', packageVersion("pROC"), paste(out, collapse = ",\n ")), file = args[2])
